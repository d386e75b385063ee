"""The synthetic private-domain world: siyu's built-in data and the test oracle of every module.

Each person follows a BG/NBD purchase process (λ ~ Gamma(r, α) per day, dropout p ~ Beta(a, b)
after each repeat purchase) modulated by a calendar intensity (618, Double 11, Spring Festival),
spends per Gamma-Gamma, buys across channels, leaves interaction events that fade before dropout,
receives randomised outreach campaigns with a true heterogeneous effect, and appears under several
identity fragments. ``generate_world`` returns the five contract tables plus the ``Truth``;
``write_world`` stores them as ``DIR/<table>.parquet`` and ``DIR/truth/``; the oracles answer
P(alive), P(purchase) and the true uplift for any cutoff. Same config ⇒ byte-identical files.

Quick use::

    from features.synthetic import SynthConfig, generate_world, oracle_p_purchase
    world = generate_world(SynthConfig(customers=5_000, seed=1))
    p = oracle_p_purchase(world.truth, "2024-06-01", 7)
"""

from features.synthetic.calendar import business_midnight, season_multiplier
from features.synthetic.config import CHANNEL_ANNOY, CHANNEL_COSTS, CHANNEL_KAPPA, SynthConfig
from features.synthetic.identities import demo_pii_key
from features.synthetic.population import PERSONAS
from features.synthetic.truth import Truth, load_truth, oracle_p_alive, oracle_p_purchase, oracle_uplift
from features.synthetic.world import STEPS, World, generate_world, summarize, write_world

__all__ = [
    "CHANNEL_ANNOY",
    "CHANNEL_COSTS",
    "CHANNEL_KAPPA",
    "PERSONAS",
    "STEPS",
    "SynthConfig",
    "Truth",
    "World",
    "business_midnight",
    "demo_pii_key",
    "generate_world",
    "load_truth",
    "oracle_p_alive",
    "oracle_p_purchase",
    "oracle_uplift",
    "season_multiplier",
    "summarize",
    "write_world",
]
