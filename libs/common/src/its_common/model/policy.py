"""The actor half of sb3-contrib's ``RecurrentActorCriticPolicy`` (``MlpLstmPolicy``) in plain
torch: the same action distribution from the same weights, without stable-baselines3.

Path (``get_distribution`` in sb3-contrib): flatten the observation (``FlattenExtractor``) ->
actor LSTM, whose state is multiplied by ``1 - episode_start`` first (zeroed at a session's
first bar) -> the ``mlp_extractor`` policy net (``Linear`` + activation per ``net_arch["pi"]``
layer) -> ``action_net`` (logits) -> ``Categorical(logits)`` probabilities. The critic (its own
LSTM by default, ``enable_critic_lstm=True``) plays no part in choosing actions and is not kept.
The LSTM state is ``(h, c)``, each ``(n_lstm_layers, 1, lstm_hidden_size)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

import torch
from torch import nn

ACTIVATIONS: Final[dict[str, type[nn.Module]]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leakyrelu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}

State = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class PolicyShape:
    """The network's shape (``network`` in bundle.json)."""

    obs_size: int
    n_actions: int
    lstm_hidden_size: int
    n_lstm_layers: int
    pi_layers: tuple[int, ...]
    activation: str  # a key of ACTIVATIONS (torch class name, lower case)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation {self.activation!r} not supported (one of {', '.join(ACTIVATIONS)})"
            )
        if min(self.obs_size, self.n_actions, self.lstm_hidden_size, self.n_lstm_layers) < 1:
            raise ValueError(f"invalid network shape {self}")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "pi_layers": list(self.pi_layers)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PolicyShape:
        return cls(
            obs_size=int(data["obs_size"]),
            n_actions=int(data["n_actions"]),
            lstm_hidden_size=int(data["lstm_hidden_size"]),
            n_lstm_layers=int(data["n_lstm_layers"]),
            pi_layers=tuple(int(n) for n in data["pi_layers"]),
            activation=str(data["activation"]),
        )


class RecurrentActor(nn.Module):
    """State-dict keys: ``lstm_actor.*`` (as sb3-contrib's), ``policy_net.*`` (sb3's
    ``mlp_extractor.policy_net.*``), ``action_net.*``."""

    def __init__(self, shape: PolicyShape) -> None:
        super().__init__()
        self.shape = shape
        self.lstm_actor = nn.LSTM(
            shape.obs_size, shape.lstm_hidden_size, num_layers=shape.n_lstm_layers
        )
        layers: list[nn.Module] = []
        last = shape.lstm_hidden_size
        for size in shape.pi_layers:
            layers += [nn.Linear(last, size), ACTIVATIONS[shape.activation]()]
            last = size
        self.policy_net = nn.Sequential(*layers)
        self.action_net = nn.Linear(last, shape.n_actions)
        self.eval()

    def initial_state(self) -> State:
        """Zeros, ``(n_lstm_layers, 1, lstm_hidden_size)`` each (one sequence)."""
        size = (self.shape.n_lstm_layers, 1, self.shape.lstm_hidden_size)
        return torch.zeros(size, dtype=torch.float32), torch.zeros(size, dtype=torch.float32)

    def forward(
        self, obs: torch.Tensor, state: State, episode_start: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """One step of one sequence: ``obs`` (1, obs_size) normalized, ``episode_start`` (1,)
        1.0 at a session's first bar; returns the action probabilities (1, n_actions) and the
        new state."""
        features = torch.flatten(obs.float(), start_dim=1)
        keep = (1.0 - episode_start).view(1, 1, 1)
        hidden, (h, c) = self.lstm_actor(features.unsqueeze(0), (keep * state[0], keep * state[1]))
        latent = self.policy_net(torch.flatten(hidden.transpose(0, 1), start_dim=0, end_dim=1))
        logits = self.action_net(latent)
        # torch's Categorical(logits=...): normalized logits, then softmax.
        logits = logits - logits.logsumexp(dim=-1, keepdim=True)
        return torch.softmax(logits, dim=-1), (h, c)
