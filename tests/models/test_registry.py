"""One registry: a model class or variant registers itself by its decorator in its own file, discovery imports
every module under pipeline/models, and the class list, the variant list and `python -m
pipeline.models.baselines` derive from that; `load_model` still looks a file's class name up only among the
registered classes."""
import sys
import textwrap

import pytest
import torch

import pipeline.models.baselines as baselines
from pipeline.errors import DataError, ParamsError
from pipeline.models import registry, variants
from pipeline.models.baselines.__main__ import main as list_variants
from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.models.debcm import DebCMConfig
from pipeline.training.checkpoint import save_torch

from model_batches import MUSIC, TEXT, VISUAL

# The listing order before the registry derived it (MODULES then the paper tuple): kept, every name pinned.
TODAY = ("student", "no_teacher", "cmvae", "decrs", "interaction", "interaction_content", "cmvae_pgc", "cmvae_kl",
         "teacher_alone", "random", "popularity", "popularity_pgc", "linear", "linear_pgc", "cca", "cca_pgc", "ips",
         "dual_ips", "ips_pgc", "dual_ips_pgc", "decrs_pgc", "calibration", "calibration_pgc", "cevar", "cmvbr",
         "dscmr", "uwml", "dual_vae", "da_vae", "cross_vae", "cmvae_no_generation", "cmvae_concat_fusion",
         "cmvae_moe_fusion", "cmvae_text_missing")
CLASS_NAMES = {"CMVAE", "DebCM", "DebiasedCMVAE", "DebiasedDebCM", "Calibrated", "RandomScores", "Popularity",
               "RidgeMap", "CCAMap", "CEVAR", "CMVBR", "DSCMR", "UWML", "DualVAE", "DAVAE", "CrossVAE"}

NEW_FILE = '''
"""A variant added as one file: its model class and its variant, nothing else edited."""
from pipeline.models.cmvae import CMVAE
from pipeline.models.registry import model_class
from pipeline.models.variants import cmvae_part, register


@model_class
class DroppedInModel(CMVAE):
    """CMVAE under another name."""


@register("dropped_in", table="a test", row="Dropped-in")
def dropped_in(s, p):
    """A variant no list names."""
    cfg = cmvae_part(s)
    return lambda v, m, t: DroppedInModel(v, m, t, cfg)
'''


@pytest.fixture
def registries():
    """Restore the registries and sys.modules after a test that adds to them."""
    specs, classes, modules = dict(variants.REGISTRY), dict(registry.CLASSES), set(sys.modules)
    yield
    variants.REGISTRY.clear()
    variants.REGISTRY.update(specs)
    registry.CLASSES.clear()
    registry.CLASSES.update(classes)
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def test_the_lists_derive_from_the_decorators_in_todays_order():
    assert variants.names() == baselines.VARIANTS == TODAY
    assert baselines.BASELINES == TODAY[1:]
    assert set(registry.classes()) == CLASS_NAMES
    for cls in registry.classes().values():  # each registered by the file that defines it
        assert cls.__module__.startswith("pipeline.models.")
    for spec in variants.registered().values():
        assert spec.module == spec.make.__module__


def test_a_variant_file_dropped_into_a_model_package_is_listed_loaded_and_built(tmp_path, monkeypatch, capsys,
                                                                                 registries):
    extra = tmp_path / "more_baselines"
    extra.mkdir()
    (extra / "dropped_in.py").write_text(textwrap.dedent(NEW_FILE))
    # the file sits in a directory of the baselines package (its __path__), as if copied into the folder
    monkeypatch.setattr(baselines, "__path__", [*baselines.__path__, str(extra)])
    registry.discover(refresh=True)

    assert baselines.VARIANTS == (*TODAY, "dropped_in")  # no ORDER: after every file that sets one
    assert "dropped_in" in baselines.BASELINES
    baselines.BaselineParams(variants=("dropped_in",)).validate()
    list_variants(["--names"])
    assert capsys.readouterr().out.strip().endswith(",dropped_in]")
    list_variants([])
    assert "dropped_in" in capsys.readouterr().out

    student = DebCMConfig(latent_dim=8, hidden_dims=(16,), num_negatives=5)
    torch.manual_seed(0)
    model = baselines.variant("dropped_in", student).build(VISUAL, MUSIC, TEXT)
    assert type(model).__name__ == "DroppedInModel"
    save_torch({"model": registry.model_spec(model), "state_dict": model.state_dict()}, tmp_path / "m.pt")
    again = registry.load_model(tmp_path / "m.pt")  # saved models of the new class load
    assert type(again) is type(model)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def test_a_class_name_from_a_file_is_looked_up_among_registered_classes_only(tmp_path):
    model = CMVAE(VISUAL, MUSIC, TEXT, CMVAEConfig(latent_dim=4, hidden_dims=(8,)))
    spec = registry.model_spec(model)
    # a class that exists in the model packages but is not registered (a base class, a helper), a module path,
    # a non-string: each refused in one line, before anything is imported or built
    for name in ("ClosedForm", "Standardizer", "EmbeddingModel", "pipeline.models.cmvae:CMVAE", "os.system",
                 ["CMVAE"], None):
        save_torch({"model": dict(spec, **{"class": name}), "state_dict": model.state_dict()}, tmp_path / "x.pt")
        with pytest.raises(DataError, match="model class"):
            registry.load_model(tmp_path / "x.pt")
        with pytest.raises(DataError, match="model class"):
            registry.class_named(name)


def test_model_class_refuses_a_second_class_of_a_name_and_a_class_without_a_config(registries):
    with pytest.raises(ParamsError, match="registered twice"):
        registry.model_class(type("CMVAE", (CMVAE,), {"__module__": "elsewhere"}))
    with pytest.raises(ParamsError, match="config_class"):
        registry.model_class(type("NoConfig", (torch.nn.Module,), {}))
    assert registry.model_class(CMVAE) is CMVAE  # the same class again (a module re-imported): fine


def test_discovery_imports_every_module_under_the_model_packages():
    import pkgutil

    import pipeline.models

    registry.discover()
    expected = {m.name for m in pkgutil.walk_packages(pipeline.models.__path__, "pipeline.models.")
                if not m.name.rsplit(".", 1)[1].startswith("_")}
    assert expected <= set(sys.modules)
    assert {"pipeline.models.cmvae_paper.cevar", "pipeline.models.cmvae_paper.ablations",
            "pipeline.models.baselines.core"} <= expected


def test_trained_config_reads_what_the_folders_models_were_trained_with(tmp_path):
    from pipeline.models.debcm import DebCM

    assert registry.trained_config(tmp_path) is None  # no model: the report says so rather than guess
    for seed in (0, 1):
        model = DebCM(VISUAL, MUSIC, TEXT, DebCMConfig(latent_dim=4, hidden_dims=(8,), kl_weight=4))
        save_torch({"model": registry.model_spec(model), "state_dict": model.state_dict()}, tmp_path / f"weak_s{seed}.pt")
    assert registry.trained_config(tmp_path)["kl_weight"] == 4.0
