"""fastlstm.nn: the module protocol, layers, losses and metrics (explicit forward/backward).

    model = nn.Sequential(nn.LSTM(1, 50, batch_first=True), nn.LastStep(), nn.Linear(50, 1))
    model.train(); y = model(x, lengths=lengths)
    loss, dy = nn.MSELoss()(y, target); model.backward(dy)       # grads in named_parameters()
"""

from ..layers import LSTM
from .layers import (Dense, Dropout, Embedding, Flatten, LastStep, LayerNorm, Linear, MaxPool, MeanPool,
                     ReLU, Sequential, Sigmoid, Tanh)
from .losses import (BCEWithLogitsLoss, CrossEntropyLoss, GaussianNLLLoss, HuberLoss, L1Loss, Loss, MSELoss,
                     QuantileLoss, get_loss)
from .metrics import accuracy, mae, rmse
from .module import Module, register

__all__ = ["Module", "register", "LSTM", "Linear", "Dense", "Embedding", "Dropout", "LastStep", "MeanPool",
           "MaxPool", "LayerNorm", "ReLU", "Tanh", "Sigmoid", "Flatten", "Sequential", "Loss", "MSELoss",
           "L1Loss", "HuberLoss", "QuantileLoss", "GaussianNLLLoss", "CrossEntropyLoss", "BCEWithLogitsLoss",
           "get_loss", "accuracy", "rmse", "mae"]
