"""Kubeflow components: one module per stage, each a thin typed wrapper over ``vlpeft.stages``.

Every component is a Lightweight Python component (the only kind ``kfp.local.SubprocessRunner`` runs, so the
whole DAG runs in CI) whose body imports ``vlpeft`` inside the function: it runs in our image on a cluster,
with ``base_image`` = the image tag given at compile time and no pip at run time
(``install_kfp_package=False``, no ``packages_to_install``: the image has kfp and vlpeft from the lock).
Module-level imports are stdlib and kfp only (tests/kfp/test_components.py checks it).
"""

import types

from kfp import dsl

from components import data, features, pretrain, register, summary, sweep, train

MODULES = (data, pretrain, features, sweep, train, summary, register)


def build(image: str) -> types.SimpleNamespace:
    """Every component, built for ``image`` (one namespace attribute per stage function)."""
    built = {}
    for module in MODULES:
        for func in module.STAGES:
            built[func.__name__] = dsl.component(func, base_image=image, install_kfp_package=False)
    return types.SimpleNamespace(**built)
