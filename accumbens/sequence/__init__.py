"""Sequence models for accumbens: symmetric power attention (parallel and recurrent forms).

Public API:
  power_attention(q, k, v, log_g=None, *, degree=2, scale=None, chunk_size=None, impl="auto")
  init_state(batch, kv_heads, head_dim, degree=2) -> PowerState
  step(state, q_t, k_t, v_t, log_g_t=None) -> (PowerState, y_t)
  init_window_state(...) -> WindowState, window_step(state, q_t, k_t, v_t, log_g_t=None)
      the chunk-aligned decode form: agrees with the chunked training form in float32
  masked_power_attention(...): the chunked form over padded histories, chunks aligned to each
      sequence's first valid step (as the windowed acting state's are)
  expanded_dim(head_dim, degree) -> D = C(head_dim + degree - 1, degree)
"""
from accumbens.sequence._common import expanded_dim
from accumbens.sequence.power_attention import power_attention
from accumbens.sequence.masked import masked_power_attention
from accumbens.sequence.recurrent import PowerState, init_state, step
from accumbens.sequence.windowed import WindowState, init_window_state, window_step

__all__ = [
    "power_attention", "init_state", "step", "PowerState", "expanded_dim",
    "init_window_state", "window_step", "WindowState", "masked_power_attention",
]
