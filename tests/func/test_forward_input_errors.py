"""A wrong input shape is named as the input's: torch's error from inside a layer (a
3-channel image into a 1-channel convolution, a vector of the wrong width) gets the input's
shape, the failing layer and what it takes appended, still as the RuntimeError it was."""

import pytest
import torch
from torch import nn

import metaloop as ml
from metaloop.func.params import forward, params_of


class HeadFirst(nn.Module):
    """A head registered before the layers that run first."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.body = nn.Linear(6, 8)

    def forward(self, x, head=True):
        h = torch.tanh(self.body(x))
        return self.head(h) if head else h


def test_a_wrong_feature_width_names_the_input_and_the_layer_that_runs_first():
    model = HeadFirst()
    with pytest.raises(RuntimeError, match=r"(?s)cannot be multiplied.*the input x is \[5, 7\] "
                                           r"torch.float32; the failing layer is body \(Linear"
                                           r"\), whose input was \[5, 7\]; it takes \[\.\.\., "
                                           r"6\] \(6 input features\)"):
        forward(model, params_of(model), torch.randn(5, 7))


def test_three_channel_images_into_a_one_channel_conv_name_the_channels():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    model(torch.randn(2, 1, 8, 8))                          # a model of your own, built
    with pytest.raises(RuntimeError, match=r"(?s)expected input.*the input x is \[4, 3, 8, 8\]"
                                           r".*layer is 0 \(Conv2d\).*C = 1 input channels"):
        forward(model, params_of(model), torch.randn(4, 3, 8, 8))


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_a_learner_given_a_wrong_width_says_so_in_both_batchings(batching):
    learner = ml.meta.MAML(HeadFirst(), inner_lr=0.1, loss="ce", batching=batching)
    y = torch.arange(3).repeat(3)[None].repeat(2, 1)
    batch = ml.TaskBatch(torch.randn(2, 9, 7), y, torch.randn(2, 9, 7), y)
    with pytest.raises(RuntimeError, match=r"the input x is \[9, 7\].*body \(Linear\)"):
        learner.meta_loss(batch)
    with pytest.raises(RuntimeError, match=r"the input x is \[9, 7\]"):
        learner.adapt(torch.randn(9, 7), y[0])


def test_an_error_that_is_not_a_plain_runtime_error_keeps_its_type_and_message():
    class Fails(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Linear(2, 2)

        def forward(self, x):
            raise NotImplementedError("no rule")            # a RuntimeError subclass

    with pytest.raises(NotImplementedError, match=r"^no rule$"):
        forward(Fails(), {}, torch.randn(2, 2))
