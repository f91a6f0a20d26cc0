"""EgoHMR stage-2 sampling: 5 samples of one person, DDIM-5 and DDPM-50, with and without the
collision guidance; the samples batched through the denoiser and SMPL (meshrec) against one
sample at a time (what upstream's test script does)."""

from __future__ import annotations

import pytest
import torch

import meshrec

pytest.importorskip("meshrec_egohmr")

SAMPLES = 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from meshrec.testing import write_synthetic_body_models
    from meshrec_egohmr.stage2 import EgoHMRDenoiser

    torch.manual_seed(0)
    network = EgoHMRDenoiser().eval()  # released sizes, random weights
    network.set_statistics(torch.zeros(144), torch.full((144,), 0.3))
    body = meshrec.body.SMPL(write_synthetic_body_models(tmp_path_factory.mktemp("egohmr")), create_transl=False)
    transl = torch.tensor([[0.0, 0.3, 3.0]])
    with torch.no_grad():
        rest = body(betas=torch.zeros(1, 10)).vertices[0]
    low, high = rest.amin(0), rest.amax(0)
    generator = torch.Generator().manual_seed(1)
    # a 20000-point cube around the body whose lower third is filled (penetrates the legs)
    cube = torch.rand(20000, 3, generator=generator) * 2 - 1
    cube[:6000] = low + torch.rand(6000, 3, generator=generator) * (high - low) * torch.tensor([1.0, 0.35, 1.0])
    cube = cube + transl
    with torch.no_grad():
        condition = network.condition(torch.randn(1, 3, 224, 224, generator=generator), cube[None], transl,
                                      torch.tensor([1460.0]), torch.tensor([[955.0, 540.0]]),
                                      torch.tensor([[900.0, 600.0]]), torch.tensor([700.0]))
    return network, body, condition, cube - transl


def _sample(network, body, condition, local_cube, respacing, guided, batched):
    from meshrec_egohmr.diffusion import Diffusion
    from meshrec_egohmr.model import _collision_guidance

    diffusion = Diffusion.create(respacing)
    visible = torch.zeros(1, 24, dtype=torch.bool)
    visible[:, :12] = True
    groups = [SAMPLES] if batched else [1] * SAMPLES
    results = []
    generator = torch.Generator().manual_seed(2)
    for count in groups:
        rows = {key: condition[key].expand(count, -1) for key in ("image", "rest")}
        rows_visible = visible.expand(count, 24)

        def denoise(x, step, rows=rows, rows_visible=rows_visible, count=count):
            return network.denoise(x, torch.full((count,), step), rows, rows_visible, True)

        guidance = None
        if guided:
            guidance = _collision_guidance(network, body, condition["betas"].expand(count, 10), [local_cube], count)
        noise = torch.randn(count, 144, generator=generator)
        with torch.inference_mode():
            results.append(diffusion.sample(denoise, noise, generator=generator, guidance=guidance,
                                            guidance_weight=30.0 if guided else 0.0))
    return torch.cat(results)


@pytest.mark.benchmark(group="egohmr-sampling")
@pytest.mark.parametrize("respacing", ["ddim5", "ddpm"])
@pytest.mark.parametrize("guided", [False, True], ids=["plain", "guided"])
def test_sampling_five_samples(benchmark, setup, respacing, guided):
    network, body, condition, local_cube = setup
    x0 = benchmark.pedantic(_sample, args=(network, body, condition, local_cube, respacing, guided, True),
                            rounds=1, iterations=1)
    assert x0.shape == (SAMPLES, 144) and torch.isfinite(x0).all()
    benchmark.extra_info.update(samples=SAMPLES, respacing=respacing, guided=guided)


@pytest.mark.benchmark(group="egohmr-batching")
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "one-at-a-time"])
def test_ddim5_batched_vs_one_at_a_time(benchmark, setup, batched):
    network, body, condition, local_cube = setup
    x0 = benchmark.pedantic(_sample, args=(network, body, condition, local_cube, "ddim5", False, batched),
                            rounds=2, iterations=1)
    assert x0.shape == (SAMPLES, 144) and torch.isfinite(x0).all()
