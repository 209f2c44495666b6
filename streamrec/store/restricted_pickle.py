"""Unpickling checkpoint state through an allow-list: defence in depth behind the checkpoint HMAC.

The HMAC (checkpoint.py) is what keeps forged files out: nothing is unpickled before it verifies.
This module is for the day a key leaks. Pickle can call any importable function with any
arguments (`os.system`, `subprocess.Popen`, `builtins.eval`...), so a file signed with a leaked
key would otherwise run whatever it names. Here every global a pickle asks for must be one of the
exact (module, name) pairs below, found by pickling real pipeline states (every rating model,
ranker and exploration policy after learning; `tests/test_checkpoint_security.py` round-trips all
of them, so a learner that needs a new class fails a test instead of a restore).

Why exact pairs and not "any class under `streamrec.` or `river.`": constructing a class runs its
`__init__` with arguments the file chooses, and some classes do real things there. A
`streamrec.io.kafka_sink.KafkaSink` builds a librdkafka producer from a config dict, and
librdkafka's `plugin.library.paths` loads a shared library, which someone who can write into the
state dir can also write; `streamrec.sim.service_process.ServiceProcess` starts a process. Exact
pairs allow none of that. Every name allowed here is safe to call with any arguments: data
classes, River estimators and optimizers, numpy's array/RNG reconstructors. numpy refuses object
arrays from raw bytes.

`builtins.getattr` is how pickle stores bound methods (River's bandits keep `reward_obj.clone` as
a defaultdict factory). It is the classic escape (`getattr(os, "system")`), so it is replaced by
a function that returns only the methods in `METHODS`, and only on instances of those classes.

What is left: a file signed with a leaked key can still hand the service any *state* built from
these parts, e.g. a model that recommends what the forger wants. Rotating a leaked key is the fix.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

from streamrec.errors import CheckpointError

GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", "float"),
        ("collections", "Counter"),
        ("collections", "defaultdict"),
        ("functools", "partial"),  # a defaultdict factory; it can only wrap names allowed here
        ("random", "Random"),
        ("numpy", "dtype"),
        # numpy >= 2 names its core package `numpy._core`; 1.26 (still supported) `numpy.core`.
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy.random._mt19937", "MT19937"),
        ("numpy.random._pcg64", "PCG64"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        ("river.bandit.bayes_ucb", "BayesUCB"),
        ("river.bandit.epsilon_greedy", "EpsilonGreedy"),
        ("river.bandit.exp3", "Exp3"),
        ("river.bandit.lin_ucb", "LinUCBDisjoint"),
        ("river.bandit.thompson", "ThompsonSampling"),
        ("river.bandit.ucb", "UCB"),
        ("river.linear_model.bayesian_lin_reg", "BayesianLinearRegression"),
        ("river.optim.initializers", "Normal"),
        ("river.optim.initializers", "Zeros"),
        ("river.optim.losses", "Squared"),
        ("river.optim.schedulers", "Constant"),
        ("river.optim.sgd", "SGD"),
        ("river.proba.beta", "Beta"),
        ("river.reco.baseline", "Baseline"),
        ("river.reco.biased_mf", "BiasedMF"),
        ("river.stats.mean", "Mean"),
        ("streamrec.bandit.policies", "SlotPolicy"),
        ("streamrec.bandit.rewards", "PendingList"),
        ("streamrec.bandit.rewards", "PendingRewards"),
        ("streamrec.learners.baselines", "RecentBias"),
        ("streamrec.learners.baselines", "SGDBaseline"),
        ("streamrec.learners.baselines", "ShrunkBaseline"),
        ("streamrec.learners.biased_mf", "DenseBiasedMF"),
        ("streamrec.learners.dense_table", "DenseTable"),
        ("streamrec.learners.ensemble", "RLSEnsemble"),
        ("streamrec.learners.ensemble", "_RLS"),
        ("streamrec.learners.mf_ranker", "MFRanker"),
        ("streamrec.learners.popularity", "PopularityOnly"),
        ("streamrec.learners.residual_knn", "ResidualItemKNN"),
        ("streamrec.learners.river_readonly", "ReadOnlyRiver"),
        ("streamrec.learners.sequence_knn", "SequenceItemKNN"),
        ("streamrec.learners.svdpp", "SVDPlusPlus"),
        ("streamrec.contract.catalog", "AttributeRange"),
        ("streamrec.contract.catalog", "Rule"),
        ("streamrec.core.catalog", "Catalog"),
        ("streamrec.core.content", "ContentIndex"),
        ("streamrec.core.model", "DecayedCounts"),
        ("streamrec.core.model", "Histories"),
        ("streamrec.core.model", "RecommenderModel"),
        ("streamrec.core.pipeline", "PipelineState"),
        ("streamrec.core.preprocess", "Preprocessor"),
        ("streamrec.service.state", "ServiceState"),
        ("streamrec.settings", "ModelSettings"),
    }
)
"""Every global a streamrec checkpoint may name, and nothing else."""

METHODS: dict[tuple[str, str], frozenset[str]] = {
    # River bandits: `_rewards = defaultdict(reward_obj.clone)`; Thompson sampling reseeds.
    ("river.stats.mean", "Mean"): frozenset({"clone"}),
    ("river.proba.beta", "Beta"): frozenset({"clone"}),
    ("river.bandit.thompson", "ThompsonSampling"): frozenset({"_clone_reward_obj_with_seed"}),
}
"""Bound methods a checkpoint may hold, by the (module, class) of their instance."""


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for a global that no streamrec checkpoint holds."""


def _bound_method(obj: object, name: str) -> Any:
    """`getattr` as pickle uses it for bound methods, limited to `METHODS`."""
    cls = type(obj)
    if name not in METHODS.get((cls.__module__, cls.__qualname__), frozenset()):
        raise ForbiddenGlobal(f"getattr({cls.__module__}.{cls.__qualname__}, {name!r})")
    return getattr(obj, name)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "getattr"):
            return _bound_method
        if (module, name) not in GLOBALS:
            raise ForbiddenGlobal(f"{module}.{name}")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise ForbiddenGlobal(f"persistent id {pid!r}")


def load(stream: IO[bytes], source: object) -> Any:
    """Unpickle one checkpoint state from `stream`, allowing only `GLOBALS` and `METHODS`.

    Raises CheckpointError naming what was refused: a signed file that names anything else was
    signed by someone holding the key, or written by a streamrec whose learners need a global
    this one does not know.
    """
    # fix_imports=False: no Python 2 name mapping, so the names checked are the names imported.
    unpickler = _Unpickler(stream, fix_imports=False)
    try:
        return unpickler.load()
    except ForbiddenGlobal as exc:
        raise CheckpointError(
            f"checkpoint {source} is signed with the configured key but names {exc}, which no "
            "streamrec checkpoint holds; it was refused. If this streamrec did not write it, the "
            "key has leaked: set a new service.checkpoint_key and move the state dir away"
        ) from None
