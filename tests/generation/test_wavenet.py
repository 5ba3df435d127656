"""WaveNet: incremental state vs teacher-forced forward, receptive field, conditioning checks."""
import itertools

import pytest
import torch

from generation.wavenet import WaveNet, WaveNetConfig, shift_right

COND_MODES = ["none", "speaker_id", "global_vector", "local", "local+speaker"]


def small_config(kernel_size=2, output="mulaw", cond="none", causal=True, **kw) -> WaveNetConfig:
    return WaveNetConfig(
        layers_per_cycle=4, n_cycles=2, kernel_size=kernel_size, causal=causal, residual_channels=8,
        gate_channels=6, skip_channels=10, output=output, quantization_channels=32, n_mixtures=3,
        regression_channels=2,
        n_speakers=3 if "speaker" in cond else 0,
        global_channels=4 if ("speaker" in cond or cond == "global_vector") else 0,
        local_channels=5 if "local" in cond else 0,
        upsample_factors=(2, 3) if "local" in cond else (), **kw)


def conditioning(config: WaveNetConfig, batch: int, n: int, dtype=torch.float64):
    local = torch.randn(batch, 5, n // 6 + 1, dtype=dtype) if config.local_channels else None
    if config.n_speakers:
        glob = torch.tensor([0, 2, 1][:batch])
    elif config.global_channels:
        glob = torch.randn(batch, 4, dtype=dtype)
    else:
        glob = None
    return local, glob


def step_all(model, x, local, glob):
    state = model.init_state(x.shape[0], local, glob, n_samples=x.shape[1] + 2)
    return torch.stack([model.step(x[:, t], state) for t in range(x.shape[1])], dim=-1), state


@pytest.mark.parametrize("kernel_size,output,cond",
                         list(itertools.product([2, 3], ["mulaw", "logistic_mixture", "regression"], COND_MODES)))
def test_step_loop_equals_forward(kernel_size, output, cond):
    torch.manual_seed(kernel_size * 100 + len(output) + len(cond))
    config = small_config(kernel_size, output, cond)
    model = WaveNet(config).double().eval()
    batch, n = 2, 2 * model.receptive_field + 7
    x = torch.rand(batch, n, dtype=torch.float64) * 2 - 1
    local, glob = conditioning(config, batch, n)
    with torch.no_grad():
        ref = model(x, local, glob)
        steps, state = step_all(model, x, local, glob)
    assert ref.shape == (batch, config.output_channels, n)
    err = (ref - steps).abs().max().item()
    assert err < 1e-6, f"step loop differs from forward by {err}"
    # the comparison is sensitive: corrupting one ring-buffer row changes the next step
    with torch.no_grad():
        before = model.step(x[:, 0], WaveNetState_copy(state))
        state.buffers[-1][:, :, (state.position - 2 ** 3) % state.buffers[-1].shape[-1]] += 1.0
        after = model.step(x[:, 0], state)
    assert (before - after).abs().max().item() > 1e-3


def WaveNetState_copy(state):
    from generation.wavenet import WaveNetState

    return WaveNetState([b.clone() for b in state.buffers], state.position, state.local, state.global_emb)


def test_receptive_field_matches_paper_and_gradients():
    assert WaveNet(WaveNetConfig(layers_per_cycle=10, n_cycles=3, kernel_size=2, residual_channels=2,
                                 gate_channels=2, skip_channels=2)).receptive_field == 3070
    big3 = WaveNet(WaveNetConfig(layers_per_cycle=10, n_cycles=3, kernel_size=3, causal=False,
                                 residual_channels=2, gate_channels=2, skip_channels=2, output="regression"))
    assert big3.receptive_field == 6139 and big3.lookahead == 3069 and big3.lookback == 3069
    for causal, k in [(True, 2), (True, 3), (False, 3), (False, 2)]:
        torch.manual_seed(0)
        model = WaveNet(small_config(k, "regression", causal=causal)).double()
        n, t = 200, 100
        x = (torch.rand(1, n, dtype=torch.float64) - 0.5).requires_grad_()
        model(x)[0, 0, t].backward()
        depends = (x.grad[0].abs() > 0).nonzero()[:, 0]
        first, last = depends.min().item(), depends.max().item()
        assert last - first + 1 == model.receptive_field
        assert first == t - model.lookback and last == t + model.lookahead
        if causal:
            assert model.lookahead == 0


def test_shift_right_and_shape_errors():
    assert shift_right(torch.tensor([[1.0, 2.0, 3.0]])).tolist() == [[0.0, 1.0, 2.0]]
    model = WaveNet(small_config(cond="local"))
    with pytest.raises(ValueError, match="local_cond must be"):
        model(torch.zeros(1, 12), torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="fewer than"):
        model(torch.zeros(1, 60), torch.zeros(1, 5, 2))
    with pytest.raises(ValueError, match="x must be"):
        model(torch.zeros(12), torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="no global"):
        model(torch.zeros(1, 12), torch.zeros(1, 5, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="causal"):
        WaveNet(small_config(3, "regression", causal=False)).init_state(1)
    with pytest.raises(ValueError, match="output must be"):
        WaveNetConfig(output="softmax")


def test_upsampler_length_and_frame_locality():
    torch.manual_seed(0)
    model = WaveNet(small_config(cond="local"))
    frames = torch.randn(1, 5, 7)
    up = model.upsampler(frames)
    assert up.shape == (1, 5, 7 * 6)
    # changing the last frame only changes samples near it (kernel 2f per stage, centred)
    frames2 = frames.clone()
    frames2[..., -1] += 3.0
    changed = (model.upsampler(frames2) - up).abs().sum(1)[0] > 0
    assert not changed[:24].any() and changed[-6:].all()
