import torch
import torch.nn.functional as F
from torch import nn

from model.segment_anything.common import LayerNorm2d, MLPBlock


def test_layer_norm_2d_normalises_over_channels():
    torch.manual_seed(0)
    norm = LayerNorm2d(8)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 8, 5, 7) * 3 + 1
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (8,), norm.weight, norm.bias, eps=1e-6).permute(
        0, 3, 1, 2
    )
    torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)


def test_mlp_block_is_lin2_act_lin1():
    torch.manual_seed(0)
    block = MLPBlock(6, 24, nn.ReLU)
    x = torch.randn(3, 4, 6)
    expected = F.linear(
        F.relu(F.linear(x, block.lin1.weight, block.lin1.bias)), block.lin2.weight, block.lin2.bias
    )
    torch.testing.assert_close(block(x), expected)
    assert [name for name, _ in block.named_parameters()] == [
        "lin1.weight",
        "lin1.bias",
        "lin2.weight",
        "lin2.bias",
    ]
