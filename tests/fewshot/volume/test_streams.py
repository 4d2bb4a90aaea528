"""Per-problem random streams: each problem's draws are its own generator's, whatever the batch."""
import numpy as np
import torch

from fewshot.volume.streams import Streams, stream_seed


def test_draws_are_each_generators_own_sequence():
    seeds = [stream_seed(0, "t", episode) for episode in range(3)]
    streams = Streams(seeds)
    normals = streams.randn((4, 2), torch.tensor([2, 0]), torch.float32)
    uniforms = streams.rand((), torch.tensor([0, 1, 2]))
    references = [np.random.Generator(np.random.PCG64(seed)) for seed in seeds]   # one plain generator each
    expected_normals = [references[i].standard_normal((4, 2), dtype=np.float32) for i in (2, 0)]
    expected_uniforms = [references[i].random() for i in (0, 1, 2)]
    assert normals.shape == (2, 4, 2) and normals.dtype == torch.float32
    assert np.array_equal(normals.numpy(), np.stack(expected_normals))
    assert uniforms.shape == (3,) and uniforms.tolist() == expected_uniforms


def test_no_problem_chosen_is_an_empty_draw():
    assert Streams([1, 2]).randn((3,), torch.tensor([], dtype=torch.long)).shape == (0, 3)
