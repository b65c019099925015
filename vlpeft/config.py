"""Typed configuration for every section of ``params.yaml``.

The whole parameter set is validated once, at the edge (``load_params``), and the rest of the library only
ever sees these models. Unknown keys and bad values are refused with one line naming the file, the key and
the allowed values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    model_validator,
)

from vlpeft.config_base import EXECUTION_ONLY, MAX_INT, AutoOrOff, Section, Switch
from vlpeft.errors import ConfigError
from vlpeft.eval.vqa_normalize import DEFAULT_REVISION, VqaRevisionName

RoutingKind = Literal["none", "add", "mul", "mul_expand", "vl", "vl_relu"]
ROUTING_KINDS: tuple[str, ...] = ("none", "add", "mul", "mul_expand", "vl", "vl_relu")
Task = str  # a task name of the table in vlpeft.tasks (validated where a config names one)
# Shared numeric field types: one owner of each constraint, used by every section that holds such a value.
Seed = Annotated[int, Field(ge=0, le=MAX_INT, description="random seed, 0 .. 2**32-1")]
MAX_RANK = 4096  # wider than any backbone we adapt: a larger bottleneck is a typo, not a setting
Rank = Annotated[int, Field(ge=1, le=MAX_RANK)]
# A Kubernetes resource quantity (k8s.io/apimachinery resource.Quantity): a decimal number, then an optional
# binary (Ki..Ei), decimal (n u m k M G T P E) or exponent (e3, E-2) suffix.
K8S_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?")


def _k8s_quantity(value: str) -> str:
    if not K8S_QUANTITY.fullmatch(value) or value.startswith("-"):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 8Gi, 1.5G)")
    return value


K8sQuantity = Annotated[str, AfterValidator(_k8s_quantity)]
GO_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")  # Go time.ParseDuration (Argo retry backoff)


def _duration(value: str) -> str:
    if not GO_DURATION.fullmatch(value):
        raise ValueError(f"{value!r} is not a duration (e.g. 60s, 1m30s, 2h)")
    return value


Duration = Annotated[str, AfterValidator(_duration)]


# --------------------------------------------------------------------------------------------- data


class WorldConfig(Section):
    """The embedded synthetic shapes world (``vlpeft data synth``).

    Knobs to grow it: ``n_train``/``n_val``/``n_test`` (images per split; the first images of a split stay
    the same when a split grows), ``questions_per_image``, ``corpus_scenes`` and ``image_size``. Generation
    costs about 1 ms per image on one core.
    """

    image_size: int = Field(64, ge=16, le=512, description="square RGB image side in pixels")
    n_train: int = Field(4000, ge=1, description="training images")
    n_val: int = Field(500, ge=1, description="validation images")
    n_test: int = Field(500, ge=1, description="test images")
    max_objects: int = Field(4, ge=1, le=4, description="1..max_objects objects per image, one per quadrant")
    questions_per_image: int = Field(4, ge=1, description="VQA questions per image (distinct texts)")
    captions_per_image: int = Field(5, ge=1, description="captions per image (5 templates, cycled)")
    corpus_scenes: int = Field(6000, ge=0, description="unrendered scenes whose text forms the LM corpus")
    noise_std: float = Field(8.0, ge=0, description="std of the Gaussian pixel noise (0-255 scale)")
    annotator_accuracy: float = Field(
        0.9, ge=0, le=1, description="probability that each of the 10 annotators gives the right answer"
    )
    extra_tasks: list[Literal["gqa", "nlvr"]] = Field(
        [], description="also write GQA-like (gqa/) and NLVR2-like (nlvr/) files over the same images"
    )
    gqa_questions_per_image: int = Field(3, ge=1, description="GQA-like questions per image")
    nlvr_sentences_per_set: int = Field(
        2, ge=1, description="NLVR2-like sentences per set of two image pairs (each true for one pair)"
    )


class DataConfig(Section):
    """Which dataset the pipeline reads and how it is turned into model inputs."""

    source: Literal["synthetic", "coco"] = "synthetic"
    root: str = "data"
    vocab_min_count: int = Field(1, ge=1, description="answers seen fewer times in train are dropped")
    vocab_top_k: int = Field(3129, ge=1, description="at most this many answers (3129 for real VQAv2)")
    max_question_tokens: int = Field(20, ge=4)
    max_caption_tokens: int = Field(26, ge=4)


# ----------------------------------------------------------------------------------------- pretrain


class VitPretrainConfig(Section):
    image_size: int = Field(64, ge=16)
    patch_size: int = Field(16, ge=2)
    epochs: int = Field(30, ge=1, description="val bitwise acc: 0.91 after 20 epochs, 0.96 after 30")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)


class TextPretrainConfig(Section):
    steps: int = Field(300, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0, description="300 steps: MLM val loss 0.71 at 1e-3, 0.60 at 2e-3")
    max_positions: int = Field(40, ge=8)


class PretrainConfig(Section):
    """Unimodal pretraining of the tiny backbones of the embedded world (``vlpeft pretrain``)."""

    width: int = Field(128, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    ffn: int = Field(256, ge=8)
    vit: VitPretrainConfig = VitPretrainConfig()
    text: TextPretrainConfig = TextPretrainConfig()

    @model_validator(mode="after")
    def _heads_divide_width(self) -> PretrainConfig:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        return self


# ----------------------------------------------------------------------------------------- features


class FeaturesConfig(Section):
    """The frozen-vision-encoder feature store (``vlpeft features``)."""

    kind: Literal["pooled", "tokens", "both"] = "pooled"
    dtype: Literal["float32", "float16"] = "float32"
    batch_size: int = Field(256, ge=1)
    shard_size: int = Field(4096, ge=1, description="images per safetensors shard")
    pooling: Literal["cls", "pooler", "mean"] = Field(
        "cls", description="cls = final-LayerNorm CLS token; pooler = the checkpoint's trained pooler"
    )
    grid_pool: list[int] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="[6, 6]: the tokens kind stores the patch grid max-pooled to 6x6 (VL-Adapter's 36 CLIP "
        "grid features); null = every token",
    )


# ---------------------------------------------------------------------------------------- model/peft


class _PeftCommon(Section):
    """What every PEFT method reads; each method's own settings are the section named after it."""

    method: str = "lora"
    rank: Rank = Field(8, description="bottleneck width r of LoRA / adapter-family methods")
    alpha: float = Field(8.0, gt=0, description="LoRA scaling alpha (s = alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    routing: RoutingKind = "none"
    target_modules: list[str] | None = Field(
        None, description="module names to adapt; None = the family default (query and value)"
    )
    vision_target_modules: list[str] | None = Field(
        None,
        description="module names to adapt in the vision tower (model.vision_tower lora/adapter); None = "
        "the family default (query and value)",
    )
    fused_qkv: Literal["qv", "all"] = Field(
        "qv",
        description="LoRA on fused QKV projections (GPT-2 c_attn): qv = the query and value thirds with one "
        "joint 2r bottleneck (the released code); all = the whole projection, one rank-r LoRA (peft)",
    )
    train_layernorm: bool = Field(True, description="train the LayerNorms of layernorm_scope")
    layernorm_scope: Literal["blocks", "all"] = Field(
        "blocks",
        description="blocks = norms inside transformer blocks (the routing paper); all = every norm, "
        "embedding LayerNorms included (VL-Adapter's --unfreeze_layer_norms)",
    )
    bias: Literal["none", "lora_only", "all"] = Field(
        "none", description="biases to train: none, those of the adapted layers (the paper), or all"
    )
    sharing: Literal["single", "per_task", "shared_up", "shared_down"] = Field(
        "single",
        description="across tasks: single = one set for all; per_task = one per task; shared_up = per-task "
        "down-projections, one up (VL-Adapter's half-shared); shared_down = one down, per-task ups",
    )
    tasks: list[str] = Field(
        default_factory=list,
        description="tasks with their own modules (sharing other than single, Hyperformer's embeddings); "
        "the multitask section fills it from multitask.tasks",
    )

    @property
    def options(self) -> Any:
        """The chosen method's own settings (its ``peft.<method>`` section), or ``None`` if it has none."""
        return getattr(self, self.method, None)

    @model_validator(mode="after")
    def _method_allows_settings(self) -> _PeftCommon:
        # Combination rules of the registry (routing needs a bottleneck, a sharing mode the method has),
        # checked when params load; the model family is checked when the model is built (it is known there).
        from vlpeft.tuners.registry import get_method

        problem = get_method(self.method).setting_problem(self.routing, self.sharing)
        if problem:
            raise ValueError(problem)
        return self


def _peft_config_class() -> type[_PeftCommon]:
    """``PeftConfig``: the common fields, ``method`` restricted to the registered methods, and one section per
    method with its own settings class (from ``vlpeft.tuners.registry``), e.g. ``peft.adapter``.

    The section named by ``method`` is the method's typed config (``PeftConfig.options``); the sections of
    other methods are validated too but unused, so a sweep can switch ``method`` over one params file.
    """
    from pydantic import create_model

    from vlpeft.tuners.registry import method_specs

    specs = method_specs()
    method_names = tuple(spec.name for spec in specs)
    sections: dict[str, Any] = {
        spec.name: (spec.options, Field(default_factory=spec.options, description=spec.description))
        for spec in specs
        if spec.options is not None
    }
    return create_model(
        "PeftConfig",
        __base__=_PeftCommon,
        __doc__="Which PEFT method a tower gets (a registered name), its settings and the routing function "
        "inside its bottleneck.",
        __module__=__name__,
        method=(Literal[method_names], Field("lora", description="a registered PEFT method")),
        **sections,
    )


PeftConfig = _peft_config_class()
AdapterConfig = PeftConfig.model_fields["adapter"].annotation  # re-exported (vlpeft.tuners.adapter.config)


def tower_method(value: str) -> str:
    """``model.vision_tower`` values: the registered methods usable on the vision tower."""
    from vlpeft.tuners.registry import list_methods

    allowed = list_methods(vision_tower=True)
    if value not in allowed:
        raise ValueError(f"must be one of {', '.join(repr(m) for m in allowed)}")
    return value


TowerMode = Annotated[str, AfterValidator(tower_method)]


def bottleneck_method(value: str) -> str:
    """Sweep ``method`` values: the registered methods with a rank (a bottleneck to search over)."""
    from vlpeft.tuners.registry import list_methods

    allowed = list_methods(ranked=True)
    if value not in allowed:
        raise ValueError(f"must be one of {', '.join(repr(m) for m in allowed)}")
    return value


RankedMethod = Annotated[str, AfterValidator(bottleneck_method)]


class ModelConfig(Section):
    """Backbones and how vision meets language."""

    vision: str = Field("models/vit", description="hub id or local path of the vision encoder")
    vqa_backbone: str = Field("models/roberta", description="encoder (RoBERTa/BERT family)")
    caption_backbone: str = Field("models/gpt2", description="decoder (GPT-2 family)")
    generative_backbone: str | None = Field(None, description="encoder-decoder (BART/T5 family)")
    visual_features: Literal["pooled", "tokens"] = Field(
        "pooled", description="pooled = one visual token (m = 1, the paper); tokens = every ViT output token"
    )
    visual_prefix: bool = Field(
        True, description="prepend the visual features as prefix tokens (off + routing none = blind model)"
    )
    projection: Literal["none", "linear", "vl_t5"] = Field(
        "none",
        description="none needs equal vision/LM widths (the paper); linear = trainable Linear(d_v, d); "
        "vl_t5 = VL-T5's visual embedding LN(Linear(d_v, d)) + box branch + image-order embedding",
    )
    image_size: int | None = Field(
        None,
        ge=8,
        description="side of the images the vision encoder runs at; null = its image processor's size "
        "(position embeddings are interpolated when it differs from the checkpoint's)",
    )
    vision_tower: TowerMode = Field(
        "frozen", description="frozen (features precomputed) or trained in the loop: lora | adapter | full"
    )
    classifier_hidden_mult: int = Field(2, ge=1, description="VQA head: Linear(d, k*d) LN GELU Linear")


# -------------------------------------------------------------------------------------------- train


class TrainConfig(Section):
    """Optimisation settings for one task."""

    epochs: int = Field(6, ge=1)
    batch_size: int = Field(
        128, ge=1, description="samples per optimizer step, summed over processes and micro-steps"
    )
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    schedule: Literal["linear", "cosine"] = "linear"
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    grad_accum: int = Field(1, ge=1, description="micro-batches per step (to save memory)")
    bf16: bool = Field(True, description="bf16 autocast on CUDA; ignored on CPU")
    num_workers: int = Field(
        0, ge=0, description="threads preparing the next batches; 0 = none", json_schema_extra=EXECUTION_ONLY
    )
    max_train_samples: int | None = Field(None, ge=1)
    seed: Seed = 0
    checkpoint_every: int = Field(
        0,
        ge=0,
        description="also checkpoint every N steps; 0 = epoch ends only",
        json_schema_extra=EXECUTION_ONLY,
    )
    visual_input: Literal["features", "images"] = Field(
        "features", description="features = the feature store; images = vision encoder in the loop"
    )
    test_checkpoint: Literal["best", "last"] = Field("best", description="model scored on the test split")
    peft: PeftConfig = PeftConfig()


class CaptionTrainConfig(TrainConfig):
    """Captioning defaults: shorter training, ``vl`` routing (the paper's default function)."""

    epochs: int = Field(3, ge=1)
    val_cider_images: int = Field(
        100, ge=0, description="validation CIDEr on this many val images each epoch; 0 = val loss only"
    )
    peft: PeftConfig = PeftConfig(routing="vl")


GenerativeTask = Literal["vqa", "gqa", "nlvr", "caption"]


class MultiTaskConfig(TrainConfig):
    """VL-Adapter's multi-task setting: one encoder-decoder (``model.generative_backbone``) trained on VQA,
    GQA, NLVR2 and captions as text generation, each step one task's batch (``train --task multitask``).

    ``batch_sizes`` are per task and per optimizer step (``batch_size`` is not used); VL-Adapter's ratios are
    VQA B, GQA 100/60·B, NLVR2 20/60·B, captions 50/60·B. Validation each epoch on ``val_samples`` samples
    (images for captions) of every task; ``val_metric`` = the mean of VQA accuracy, GQA accuracy, NLVR2
    accuracy (percent) and CIDEr × 100, VL-Adapter's Table 1 average.
    """

    tasks: list[GenerativeTask] = Field(["vqa", "gqa", "nlvr", "caption"], min_length=1)
    batch_sizes: dict[GenerativeTask, int] = {"vqa": 64, "gqa": 64, "nlvr": 32, "caption": 64}  # noqa: RUF012
    task_prefix: bool = Field(True, description='"vqa: ", "gqa: ", "nlvr: ", "caption: " before the text')
    max_answer_tokens: int = Field(10, ge=1, description="VQA/GQA target length (VL-Adapter: 10)")
    val_samples: int = Field(200, ge=1, description="validation samples per task each epoch")
    answer_beams: int = Field(1, ge=1, description="beams for VQA/GQA answers (VL-Adapter: greedy)")
    caption_beams: int = Field(1, ge=1, description="beams for test captions (VL-Adapter: 5)")

    @model_validator(mode="after")
    def _peft_tasks_are_the_tasks(self) -> MultiTaskConfig:
        # The per-task PEFT modules (sharing, Hyperformer) are built for exactly the trained tasks.
        if not self.peft.tasks:
            self.peft.tasks = list(self.tasks)
        elif sorted(self.peft.tasks) != sorted(self.tasks):
            raise ValueError(f"peft.tasks {self.peft.tasks} must be the multitask tasks {self.tasks}")
        return self

    @model_validator(mode="after")
    def _batch_sizes_cover_tasks(self) -> MultiTaskConfig:
        missing = [t for t in self.tasks if t not in self.batch_sizes or self.batch_sizes[t] < 1]
        if missing:
            raise ValueError(f"batch_sizes needs a size >= 1 for {missing}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks {self.tasks} name a task twice")
        return self


class EvaluateConfig(Section):
    """Test-split evaluation: generation settings and which caption metrics run (``vlpeft.eval``)."""

    num_beams: int = Field(1, ge=1)
    max_new_tokens: int = Field(26, ge=1)
    batch_size: int = Field(256, ge=1)
    spice: AutoOrOff = Field(
        "auto", description="auto = SPICE if its CoreNLP 3.6.0 jars are present (never downloaded), else null"
    )
    meteor: Switch = Field(
        "on", description="off = METEOR null: skips its JVM and paraphrase tables (~5 s per evaluation)"
    )
    vqa_revision: VqaRevisionName = Field(
        DEFAULT_REVISION,
        description="official vqaEval.py rules for VQA accuracy: master (a013f00, 2021) or legacy (before)",
    )


# -------------------------------------------------------------------------------------------- sweep


class SweepConfig(Section):
    """Optuna search over rank and routing type (``vlpeft sweep``), from one laptop to many workers.

    Every trial trains a copy of the task's section (``vqa`` / ``caption``) with the trial's ``rank``,
    ``routing`` (and ``method`` / ``lr`` when they have more than one value here), for ``epochs`` epochs on at
    most ``max_train_samples`` examples, validating each epoch; the median pruner stops trials whose
    validation score falls below the median of earlier trials at the same epoch. The best values go to
    ``best_params.json``, which the ``train`` stage merges over ``params.yaml``.

    The sweep runs exactly ``n_trials`` trials (a queue of trial slots is put into the study before any worker
    starts; a retried trial of a dead worker comes on top and names the trial it replaces).

    How to scale it:

    - **More trials**: raise ``n_trials`` (and ``epochs`` / ``max_train_samples`` for a more faithful
      ranking); rerunning with a higher ``n_trials`` on the same storage tops the study up, and
      ``vlpeft sweep --n-trials N`` adds N trials to the study in the storage (Optuna's
      ``optimize(n_trials=N)``).
    - **More workers on one machine**: ``workers: W`` starts W worker processes, each with
      ``threads_per_worker`` torch threads (default: cores / W). sqlite is fine for a few local workers.
    - **Many machines**: point ``storage`` at a database server all of them reach, e.g.
      ``postgresql://user:pass@db-host:5432/optuna`` (or ``mysql+pymysql://…``), and start ``vlpeft sweep`` on
      every node with the same ``study_name``; the first one creates the study and its queue (start it a few
      seconds before the others), the others join it and nest their trials under the same MLflow parent run.
      Dead workers are detected by heartbeat (``heartbeat_interval``, ``grace_period``) and their trials
      retried up to ``max_retry`` times. The password of a storage URL never lands in output files or MLflow.
      ``optuna-dashboard <storage>`` (not a dependency) shows a running study live.
    - **No database server**: ``storage: journal:/shared/nfs/sweep.journal`` (any value without ``://`` is an
      Optuna journal file) works across processes and NFS nodes; journal storage has no heartbeat, so only
      the local supervisor can recover trials of a dead worker.
    """

    tasks: list[Task] = Field(["vqa", "caption"], description="tasks the sweep may search (vlpeft.tasks)")
    n_trials: int = Field(6, ge=1, description="trial slots (retries of dead workers come on top)")
    timeout: float | None = Field(None, gt=0, description="seconds; no new trial starts after this")
    workers: int = Field(1, ge=1, description="local worker processes")
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch threads per worker; None = cores/W", json_schema_extra=EXECUTION_ONLY
    )
    storage: str | None = Field(
        None,
        description="None = sqlite file optuna.db in the output dir; an SQLAlchemy URL (sqlite:///x.db, "
        "postgresql://…, mysql+pymysql://…); or an Optuna journal file (journal:PATH or any path without ://)",
        json_schema_extra=EXECUTION_ONLY,  # and a password in it must never reach dvc.lock
    )
    study_name: str | None = Field(None, description="None = vlpeft-<task>")
    direction: Literal["auto", "maximize", "minimize"] = Field(
        "auto",
        description="of the trainer's per-epoch validation value; auto = maximize (VQA accuracy, CIDEr), "
        "minimize for captioning with caption.val_cider_images 0 (validation loss)",
    )
    sampler: Literal["tpe", "grid", "random"] = "tpe"
    sampler_seed: Seed | None = Field(0, description="None = a fresh random seed per worker")
    cover_first: bool = Field(
        True, description="tpe/random: the first trials visit every routing, rank and method value once"
    )
    routing: list[RoutingKind] = Field(["none", "mul", "vl"], min_length=1)
    rank: list[Rank] | None = Field(
        [4, 8],
        min_length=1,
        description="ranks to search; None = the task's own peft.rank, not searched (so a changed "
        "<task>.peft.rank reaches every trial and the final variants)",
    )
    method: list[RankedMethod] = Field(["lora"], min_length=1)
    lr: list[float] | None = Field(
        None,
        description="None = the task's lr; [x] = fixed; [low, high] = log-uniform range (tpe/random); "
        "sampler grid: the grid points",
    )
    scale_alpha: bool = Field(False, description="alpha = peft.alpha * rank / peft.rank (fixed s = alpha/r)")
    epochs: int = Field(2, ge=1, description="epochs per trial")
    max_train_samples: int | None = Field(None, ge=1, description="training examples per trial; None = all")
    pruner: Literal["median", "none"] = "median"
    pruner_startup_trials: int = Field(2, ge=0, description="no pruning before this many trials finished")
    pruner_warmup_steps: int = Field(0, ge=0, description="no pruning before this epoch (0-based)")
    heartbeat_interval: int = Field(
        30, ge=1, description="seconds between a trial's heartbeats (RDB)", json_schema_extra=EXECUTION_ONLY
    )
    grace_period: int | None = Field(
        None,
        ge=1,
        description="stale after this many s; None = 2x interval",
        json_schema_extra=EXECUTION_ONLY,
    )
    max_retry: int = Field(
        2, ge=0, description="retries of a trial whose worker died", json_schema_extra=EXECUTION_ONLY
    )
    keep_trial_dirs: bool = Field(
        False, description="keep each trial's checkpoints (out/trials/<n>)", json_schema_extra=EXECUTION_ONLY
    )

    @model_validator(mode="after")
    def _check_space(self) -> SweepConfig:
        from vlpeft.tasks import list_tasks

        unknown = [t for t in self.tasks if t not in list_tasks(sweepable=True)]
        if unknown:
            raise ValueError(f"tasks {unknown} are not among {list_tasks(sweepable=True)}")
        if self.rank is not None and any(r < 1 for r in self.rank):
            raise ValueError(f"rank values must be >= 1 (got {self.rank})")
        if self.lr is not None:
            if not self.lr or any(v <= 0 for v in self.lr):
                raise ValueError(f"lr values must be > 0 (got {self.lr})")
            if self.sampler != "grid" and len(self.lr) == 2 and self.lr[0] > self.lr[1]:
                raise ValueError(f"lr range must be [low, high] (got {self.lr})")
        return self


# ------------------------------------------------------------------------------------ tracking/registry


class TrackingConfig(Section):
    # (``log_models`` is gone: nothing read it. Models reach MLflow through the register stage only.)
    experiment: str = "vlpeft"
    enabled: bool = True


class RegistryConfig(Section):
    vqa_name: str = "vlpeft-vqa"
    caption_name: str = "vlpeft-caption"
    multitask_name: str = "vlpeft-multitask"
    review_samples: int = Field(8, ge=0)
    variant: str = Field(
        "best", description="the final variant whose first-seed run is registered (dvc.yaml and Kubeflow)"
    )


# ---------------------------------------------------------------------------------------------- kfp


class TolerationConfig(Section):
    """One Kubernetes toleration of the GPU tasks (``kubectl explain pod.spec.tolerations``)."""

    key: str
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class PodResources(Section):
    """Requests of one kind of Kubeflow task: accelerators (0 = a CPU task), CPU, memory, /dev/shm size."""

    gpus: int = Field(
        0, ge=0, description="accelerators (kfp.gpu_type); > 1 on train runs torchrun in the pod"
    )
    cpu: K8sQuantity = Field("2", description="CPU request, Kubernetes quantity")
    memory: K8sQuantity = Field("8Gi", description="memory request, Kubernetes quantity")
    shm: K8sQuantity = Field("8Gi", description="size of the in-memory /dev/shm volume of GPU tasks")
    timeout: int | None = Field(
        None, gt=0, description="seconds a pod of this kind may run (activeDeadlineSeconds); null = no limit"
    )


class KfpConfig(Section):
    """The Kubeflow pipeline (``vlpeft kfp compile|submit|run-local``): image, GPUs, Secrets, volumes, retry.

    Only names and sizes live here: Secret *values* (MLflow credentials, the Optuna database URL) are read in
    the pods from the Kubernetes Secrets named below, never from params or the compiled pipeline.
    """

    backend: str = Field(
        "2.4.0",
        pattern=r"^\d+\.\d+\.\d+$",
        description="oldest KFP backend the pipeline must run on: the compiler emits only what it accepts",
    )
    image: str = Field(
        "vlpeft:0.1.0", description="the image every task runs, with its registry host (tag it immutably)"
    )
    image_pull_secrets: list[str] = Field([], description="Secrets (docker-registry) to pull the image")
    sweep_workers: int = Field(2, ge=1, description="sweep-worker pods in parallel (ParallelFor parallelism)")
    gpu_type: str = Field("nvidia.com/gpu", description="accelerator resource name of GPU tasks")
    allow_cpu: bool = Field(
        False, description="let GPU tasks run on CPU when CUDA is unusable (else they fail)"
    )
    node_selector: dict[str, str] = Field(
        {"nvidia.com/gpu.present": "true"}, description="node labels GPU tasks are scheduled on"
    )
    tolerations: list[TolerationConfig] = [TolerationConfig(key="nvidia.com/gpu")]  # noqa: RUF012 (pydantic copies)
    features: PodResources = PodResources(gpus=1, cpu="4", memory="16Gi")
    sweep: PodResources = PodResources(gpus=1, cpu="4", memory="16Gi")
    train: PodResources = PodResources(gpus=1, cpu="4", memory="16Gi")
    cpu_task: PodResources = PodResources()
    retries: int = Field(
        2, ge=0, description="retries of GPU tasks (a retried train resumes from its checkpoint)"
    )
    retry_backoff: Duration = Field("60s", description="first retry delay; doubles each retry")
    retry_window: str = Field(
        "168h",
        pattern=r"^\d+[smh]$",
        description="no retry starts later than this after a task's first attempt",
    )
    run_timeout: int | None = Field(None, gt=0, description="seconds a whole run may take (KFP >= 2.17)")
    run_ttl: int | None = Field(
        None, gt=0, description="seconds a finished run's workflow is kept (KFP >= 2.17)"
    )
    mlflow_secret: str = Field("vlpeft-mlflow", description="Secret read by every task that tracks")
    mlflow_secret_keys: dict[str, str] = Field(
        {
            "tracking_uri": "MLFLOW_TRACKING_URI",
            "username": "MLFLOW_TRACKING_USERNAME",
            "password": "MLFLOW_TRACKING_PASSWORD",
        },
        description="Secret key -> env var; every key must exist in the Secret (no auth: tracking_uri only)",
    )
    optuna_secret: str = Field("vlpeft-optuna", description="Secret with key url -> VLPEFT_SWEEP_STORAGE")
    hf_secret: str | None = Field(None, description="Secret with key token -> HF_TOKEN (gated hub models)")
    hf_cache_pvc: str | None = Field(None, description="existing PVC holding the hub cache (HF_HOME)")
    hf_cache_mount: str = Field("/mnt/hf", description="where hf_cache_pvc is mounted")
    workspace_size: K8sQuantity = Field(
        "20Gi", description="run workspace (checkpoints of train tasks, retries)"
    )
    workspace_storage_class: str | None = Field(None, description="storage class of the run workspace PVC")
    workspace_access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]] = Field(
        ["ReadWriteMany"], min_length=1, description="of the workspace PVC: train pods of a run share it"
    )
    workspace_pvc: str | None = Field(
        None, description="an existing PVC for checkpoints instead of one per run (any backend)"
    )
    workspace_mount: str = Field("/mnt/workspace", description="where workspace_pvc is mounted")
    data_pvc: str | None = Field(
        None, description="existing PVC with the real datasets (required for data.source coco)"
    )
    data_mount: str = Field(
        "/mnt/data", description="where data_pvc is mounted; raw downloads in <mount>/raw"
    )
    pipeline_name: str = "vlpeft"

    @model_validator(mode="after")
    def _names(self) -> KfpConfig:
        import re

        named = ("mlflow_secret", "optuna_secret", "hf_secret", "hf_cache_pvc", "workspace_pvc", "data_pvc")
        names = [(f, getattr(self, f)) for f in named if getattr(self, f) is not None]
        names += [(f"image_pull_secrets[{i}]", v) for i, v in enumerate(self.image_pull_secrets)]
        for field, value in names:
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", value or ""):
                raise ValueError(f"{field} {value!r} is not a Kubernetes object name (lower-case DNS name)")
        for key, env in self.mlflow_secret_keys.items():
            if not re.fullmatch(r"[-._a-zA-Z0-9]+", key) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
                raise ValueError(f"mlflow_secret_keys: {key!r}: {env!r} is not a Secret key -> env var name")
        if "MLFLOW_TRACKING_URI" not in self.mlflow_secret_keys.values():
            raise ValueError("mlflow_secret_keys: one key must map to MLFLOW_TRACKING_URI")
        for field in ("workspace_mount", "data_mount", "hf_cache_mount"):
            if not getattr(self, field).startswith("/"):
                raise ValueError(f"{field} {getattr(self, field)!r} is not an absolute path")
        if not self.image.strip() or any(c.isspace() for c in self.image):
            raise ValueError(f"image {self.image!r} is not an image reference")
        return self


# --------------------------------------------------------------------------------------------- root


# The final variants every task trains (params.yaml ``variants:``): overrides applied after the sweep's best
# values. ``task.`` stands for the trained task's own section (``vqa`` or ``caption``).
TASK_SECTION = "task"
DEFAULT_VARIANTS: dict[str, dict[str, Any]] = {
    "best": {},
    "norouting": {"task.peft.routing": "none"},
    "blind": {"task.peft.routing": "none", "model.visual_prefix": False},
}
VARIANT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MoreSeeds(Section):
    """More seeds for a few variants (``multitask/dvc.yaml``'s ``train_more`` matrix): the rows a comparison's
    conclusions rest on (the controls, plain LoRA) get a seed spread without training every method again."""

    variants: list[str] = Field([], description="variants (of the variants table) trained at these seeds too")
    seeds: list[int] = Field([], description="seeds besides `seeds` (disjoint from them)")


class Params(Section):
    """The whole ``params.yaml``."""

    seed: Seed = 0
    world: WorldConfig = WorldConfig()
    data: DataConfig = DataConfig()
    pretrain: PretrainConfig = PretrainConfig()
    features: FeaturesConfig = FeaturesConfig()
    model: ModelConfig = ModelConfig()
    vqa: TrainConfig = TrainConfig()
    caption: CaptionTrainConfig = CaptionTrainConfig()
    multitask: MultiTaskConfig = MultiTaskConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    sweep: SweepConfig = SweepConfig()
    tracking: TrackingConfig = TrackingConfig()
    registry: RegistryConfig = RegistryConfig()
    kfp: KfpConfig = KfpConfig()
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_VARIANTS.items()},
        description="final variants: name -> {dotted.key: value} applied over the sweep's best values "
        "(task.<key> = the trained task's section); see vlpeft.variants",
    )
    seeds: list[Seed] = Field(
        [0], min_length=1, description="training seeds of the final variants (<task>.seed of each run)"
    )
    more_seeds: MoreSeeds = MoreSeeds()

    @model_validator(mode="after")
    def _check_variant_table(self) -> Params:
        # Static checks only: resolving each variant (vlpeft.variants.check_variants) is done by
        # params_from_dict, the edge, so that validating a resolved variant never resolves variants again.
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct (got {self.seeds})")
        more = self.more_seeds
        if set(more.seeds) & set(self.seeds) or len(set(more.seeds)) != len(more.seeds):
            raise ValueError(f"more_seeds.seeds {more.seeds} must be distinct and not in seeds {self.seeds}")
        if unknown := [v for v in more.variants if v not in self.variants]:
            raise ValueError(f"more_seeds.variants: {unknown} not in the variants table")
        for name, overrides in self.variants.items():
            if not VARIANT_NAME.match(name):
                raise ValueError(
                    f"variant name {name!r}: use lowercase letters, digits and _ (it names paths)"
                )
            for key in overrides:
                check_override_key(key, f"variants.{name}")
        return self

    def task(self, task: str) -> TrainConfig:
        """The training section of one task (``vlpeft.tasks``; an unknown name is a ``ConfigError``)."""
        from vlpeft.tasks import get_task

        return get_task(task).section_of(self)


# ------------------------------------------------------------------------------------------ loading


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` over ``base`` (dicts merge, everything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


MAX_YAML_BYTES = 1 << 20  # a params file is a few KB; a megabyte is not a params file
MAX_YAML_DEPTH = 32  # params nest 4 levels deep; PyYAML's composer recurses once per level
MAX_YAML_NODES = 100_000  # nodes after alias expansion: a 500-byte alias bomb expands to billions


class _YamlRefused(yaml.YAMLError):
    """A params document we refuse to read (too deep, too large once aliases expand, duplicate key)."""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys, nesting deeper than ``MAX_YAML_DEPTH`` and documents
    larger than ``MAX_YAML_NODES`` nodes once aliases are expanded (alias bombs)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded
        self._total = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            self._count(node, self._sizes.get(id(node), 1))
            return node
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            mark = self.peek_event().start_mark
            raise _YamlRefused(f"nested deeper than {MAX_YAML_DEPTH} levels (line {mark.line + 1})")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        children = node.value if isinstance(node.value, list) else []
        flat = [c for pair in children for c in (pair if isinstance(pair, tuple) else (pair,))]
        self._sizes[id(node)] = 1 + sum(self._sizes.get(id(c), 1) for c in flat)
        return node

    def _count(self, node: Any, size: int) -> None:
        self._total += size
        if self._total > MAX_YAML_NODES:
            raise _YamlRefused(
                f"aliases expand to more than {MAX_YAML_NODES} values (line {node.start_mark.line + 1}): "
                "refused (an alias bomb?)"
            )

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # SafeLoader reports unhashable keys itself
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise _YamlRefused(f"duplicate key {key!r} (line {line}, first on line {seen[key]})")
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, where: str) -> Any:
    """Parse params YAML with ``StrictLoader``; any problem is one ``ConfigError`` line naming ``where``."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: {len(text)} characters, more than a params file holds")
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass
    except _YamlRefused as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.MarkedYAMLError as exc:  # problem and position only: the snippet may quote a cut password
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{where}: not valid YAML ({exc.problem or exc.context}{at})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    except ValueError as exc:  # a scalar PyYAML cannot convert (an integer of more than 4300 digits)
        raise ConfigError(f"{where}: not a usable value ({' '.join(str(exc).split())[:120]})") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the params file ({exc.strerror or exc})") from None
    data = load_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def _parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}`` with YAML typing of the value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. vqa.peft.routing=mul")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(p.strip() for p in parts):
        raise ConfigError(f"override {text!r}: {key!r} is not a dotted key such as vqa.peft.routing")
    value: Any = load_yaml(raw, f"override {key.strip()}") if raw else ""
    for part in reversed(parts):
        value = {part.strip(): value}
    return value


def _describe(error: dict[str, Any], model: type[BaseModel]) -> str:
    """One line for one pydantic error: the dotted key, what is wrong and what is allowed."""
    loc = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        section: Any = model
        for part in error["loc"][:-1]:
            field = section.model_fields.get(str(part)) if hasattr(section, "model_fields") else None
            section = field.annotation if field else None
        allowed = sorted(section.model_fields) if hasattr(section, "model_fields") else []
        return f"{loc}: unknown key (allowed: {', '.join(allowed)})"
    if error["type"] == "bool_number":
        field = ".".join(p for p in (loc, error["ctx"]["field"]) if p)
        return f"{field}: {error['msg']}"
    if error["type"] == "value_error":  # our own validators: the message already names key and value
        msg = error["msg"].removeprefix("Value error, ")
        return f"{loc}: {msg}" if loc else msg
    from vlpeft.redact import redact

    return f"{loc}: {error['msg']} (got {repr(redact(error.get('input')))[:200]})"


def check_override_key(key: str, where: str) -> None:
    """Refuse a dotted override key (``model.visual_prefix``, ``task.peft.routing``) that names no parameter.

    ``task.`` must name a key of every task section. Raises ``ValueError`` naming ``where`` and the choices.
    """
    full = key.split(".")
    parts, offset = full, 0
    roots: list[type[BaseModel]] = [Params]
    if full[0] == TASK_SECTION:
        from vlpeft.tasks import TASKS

        sections = [Params.model_fields[spec.section].annotation for spec in TASKS.values()]
        roots = [s for s in sections if isinstance(s, type)] if len(full) > 1 else []
        parts, offset = full[1:], 1
    elif parts[0] in ("variants", "seeds", "more_seeds"):
        raise ValueError(f"{where}: {key!r}: a variant cannot change the variant table or the seeds")
    if not roots or not parts:
        raise ValueError(f"{where}: {key!r}: expected a dotted key such as task.peft.routing")
    for root in roots:
        section: Any = root
        for i, part in enumerate(parts):
            fields = (
                section.model_fields if isinstance(section, type) and issubclass(section, BaseModel) else {}
            )
            if part not in fields:
                allowed = ", ".join(sorted(fields)) or "none: it is a value, not a section"
                at = ".".join(full[: offset + i]) or "the top level"
                raise ValueError(f"{where}: {key!r}: {at} has no key {part!r} (allowed: {allowed})")
            section = fields[part].annotation


def params_from_dict(data: dict[str, Any], source: str = "params", *, resolving: bool = False) -> Params:
    """Validate a raw dict into ``Params``; errors name ``source`` and the key.

    ``resolving`` marks an already checked parameter set with one variant applied (``vlpeft.variants``): its
    variant table is not checked again.
    """
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {_describe(first, Params)}{more}") from None
    if not resolving:
        from vlpeft.variants import check_variants

        try:
            check_variants(params)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return params


def load_params(paths: Sequence[str | Path] = ("params.yaml",), overrides: Iterable[str] = ()) -> Params:
    """Read ``paths`` in order (later files merge over earlier ones), apply ``KEY=VALUE`` overrides, validate.

    A missing first file means "all defaults" only when it is the default ``params.yaml``.
    """
    merged: dict[str, Any] = {}
    names = []
    for i, p in enumerate(paths):
        path = Path(p)
        if i == 0 and not path.exists() and str(p) == "params.yaml":
            continue
        merged = deep_merge(merged, _read_yaml(path))
        names.append(str(path))
    for text in overrides:
        merged = deep_merge(merged, _parse_override(text))
        names.append(f"override {text}")
    return params_from_dict(merged, " + ".join(names) or "defaults")


def params_to_dict(params: Params) -> dict[str, Any]:
    """The resolved config as plain data (what every artifact carries), credentials redacted.

    A password in a URL value (e.g. ``sweep.storage``) becomes ``***`` here, so no file, log, MLflow run or
    printed config gets it; code that needs the real value reads the field of ``params`` itself.
    """
    from vlpeft.redact import redact

    return redact(params.model_dump(mode="json"))


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are joined), e.g. for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = ",".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat
