"""The profiler's models: torchvision architectures, written out in torch.nn (nothing downloaded)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from qosched.profiles.profiler.models import (  # noqa: E402
    MODELS,
    Bottleneck,
    InvertedResidual,
    build_model,
    count_parameters,
    example_input,
)

# Parameter counts of torchvision's definitions (torchvision.models docs, "Params" column; also
# sum(p.numel() for p in torchvision.models.<name>().parameters())).
KNOWN_PARAMETERS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872}


@pytest.mark.parametrize("name", sorted(KNOWN_PARAMETERS), ids=sorted(KNOWN_PARAMETERS))
def test_imagenet_models_have_torchvision_parameter_counts_and_1000_logits(name: str) -> None:
    model = build_model(name)
    n_params = count_parameters(model)
    assert abs(n_params - KNOWN_PARAMETERS[name]) <= 0.01 * KNOWN_PARAMETERS[name]
    assert MODELS[name].input_chw == (3, 224, 224)
    with torch.inference_mode():
        out = model(example_input(name))
    assert tuple(out.shape) == (1, 1000)
    assert torch.isfinite(out).all()


def test_tiny_cnn_is_small_and_classifies_64px_inputs() -> None:
    model = build_model("tiny_cnn")
    with torch.inference_mode():
        out = model(example_input("tiny_cnn", batch_size=3))
    assert tuple(out.shape) == (3, 10)
    assert count_parameters(model) < 500_000


def test_resnet50_is_v1_5_stride_on_the_3x3_convolution() -> None:
    model = build_model("resnet50")
    first = model.layer2[0]
    assert isinstance(first, Bottleneck)
    assert first.conv1.stride == (1, 1)
    assert first.conv2.stride == (2, 2)
    assert first.downsample is not None


def test_mobilenet_v2_has_17_inverted_residuals_with_expansion_6() -> None:
    model = build_model("mobilenet_v2")
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17  # 1 + 2 + 3 + 4 + 3 + 3 + 1
    expand = blocks[1].conv[0][0]  # second block: 16 -> 24 channels, expansion 6
    assert (expand.in_channels, expand.out_channels) == (16, 96)
    assert sum(b.use_res_connect for b in blocks) == 10  # stride-1 blocks with equal widths


def test_weights_follow_the_seed_and_leave_the_global_rng_alone() -> None:
    torch.manual_seed(1234)
    expected_next = torch.rand(1)
    torch.manual_seed(1234)
    a = build_model("tiny_cnn", seed=7).state_dict()
    assert torch.equal(torch.rand(1), expected_next)  # global RNG not advanced by build_model
    b = build_model("tiny_cnn", seed=7).state_dict()
    c = build_model("tiny_cnn", seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_models_are_built_in_eval_mode() -> None:
    assert not build_model("tiny_cnn").training


def test_unknown_model_error_lists_the_known_names() -> None:
    with pytest.raises(KeyError, match=r"resnet18.*resnet50|mobilenet_v2.*resnet18"):
        build_model("vgg16")
