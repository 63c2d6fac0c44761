"""The prompt-free C + 1 head's starting point: foreground classes start from SAM's mask tokens
(class 1 from token 0, SAM's single-mask output) and the background logit starts at exactly 0, so
a fresh head's background is the complement of its foreground (softmax = SAM's sigmoid, argmax =
SAM's logit > 0); the background then trains like any channel."""

from __future__ import annotations

import pytest
import torch

from medequity.models.segmenter import create_segmenter
from medequity.usages._segmentation import MulticlassMaskHead


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    module = create_segmenter("sam_tiny").module
    with torch.no_grad():  # SAM's mask tokens, not the zero-mean initial ones: each class differs
        module.mask_decoder.mask_tokens.weight.normal_()
    return module


def _embeddings(sam, n: int = 3) -> torch.Tensor:
    grid = sam.prompt_encoder.image_embedding_size
    return torch.randn(n, sam.prompt_encoder.embed_dim, *grid, generator=torch.Generator().manual_seed(1))


def test_a_fresh_head_has_a_zero_background_logit_and_its_complement_as_probability(sam):
    head = MulticlassMaskHead(sam, 2)
    with torch.no_grad():
        logits = head(_embeddings(sam))
    assert logits.shape[1] == 2 and logits[:, 1].abs().min() > 0  # the foreground map is not trivial
    assert torch.equal(logits[:, 0], torch.zeros_like(logits[:, 0]))
    probability = logits.softmax(dim=1)
    torch.testing.assert_close(probability[:, 1], torch.sigmoid(logits[:, 1]))  # SAM's probability of its mask
    torch.testing.assert_close(probability[:, 0], 1 - torch.sigmoid(logits[:, 1]))
    foreground = logits[:, 1] > 0  # SAM's rule (mask_threshold 0)
    assert 0 < foreground.float().mean() < 1
    assert torch.equal(logits.argmax(dim=1) == 1, foreground)


@pytest.mark.parametrize("n_outputs", [2, 3, 6])
def test_class_c_starts_from_sams_token_c_minus_1_and_the_background_from_token_0(sam, n_outputs):
    head = MulticlassMaskHead(sam, n_outputs)
    tokens, mlps = head.mask_decoder.mask_tokens.weight, head.mask_decoder.output_hypernetworks_mlps
    original, original_mlps = sam.mask_decoder.mask_tokens.weight, sam.mask_decoder.output_hypernetworks_mlps
    assert head.mask_decoder.num_mask_tokens == len(tokens) == len(mlps) == n_outputs
    for c in range(1, n_outputs):
        source = (c - 1) % 4  # 1 -> 0 (the single-mask output), 2 -> 1, ..., 5 -> 0
        torch.testing.assert_close(tokens[c], original[source])
        for mine, theirs in zip(mlps[c].parameters(), original_mlps[source].parameters(), strict=True):
            torch.testing.assert_close(mine, theirs)
    torch.testing.assert_close(tokens[0], original[0])
    background = list(mlps[0].layers)
    for mine, theirs in zip(background[:-1], original_mlps[0].layers[:-1], strict=True):
        torch.testing.assert_close(mine.weight, theirs.weight)
    assert not background[-1].weight.any() and not background[-1].bias.any()
    # the segmenter's own decoder is untouched (its embedding cache key must not change)
    assert sam.mask_decoder.num_mask_tokens == 4 and original_mlps[0].layers[-1].weight.any()


def test_the_background_channel_trains(sam):
    head = MulticlassMaskHead(sam, 2)
    embeddings = _embeddings(sam, 2)
    with torch.no_grad():
        target = (head(embeddings)[:, 1] <= 0).long()  # the opposite of what the head predicts now
    optimiser = torch.optim.SGD(head.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(head(embeddings), target).backward()
    assert head.mask_decoder.output_hypernetworks_mlps[0].layers[-1].weight.grad.abs().sum() > 0
    optimiser.step()
    with torch.no_grad():
        assert head(embeddings)[:, 0].abs().max() > 0
