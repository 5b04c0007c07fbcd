"""ITS model runtime: what training, backtests and live inference must agree on, in one place.

The bundle format and its checks (:mod:`.bundle`), finding the bundle to serve (:mod:`.locate`),
the observation (:mod:`.observation`), the shadow portfolio's accounting (:mod:`.portfolio`), the
frozen observation normalization (:mod:`.normalize`) and the recurrent actor in plain torch
(:mod:`.policy`). No stable-baselines3, gymnasium or pandas: the inference image stays light.
"""

__version__ = "0.1.0"
