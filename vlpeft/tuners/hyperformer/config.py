"""Settings of Hyperformer (``peft.hyperformer``); defaults = VL-Adapter's hyperformer.sh run."""

from __future__ import annotations

from pydantic import Field

from vlpeft.tuners.registry import MethodOptions


class HyperformerConfig(MethodOptions):
    """Task-conditioned hypernetworks generating every adapter's weights (Hyperformer++, Mahabadi 2021).

    As VL-Adapter runs it (``--use_hyperformer --unique_hyper_net --projected_task_embedding_dim 8``): one
    hypernetwork per stack (encoder, decoder) shared by its layers through layer-id embeddings, a 512-d task
    embedding per task (not projected: ``train_task_embeddings`` False), adapters after self-attention,
    cross-attention and the feed-forward block. ``peft.rank`` is the adapters' bottleneck (d / 8 = 96);
    ``peft.tasks`` (from ``multitask.tasks``) get one task embedding each.
    """

    task_embedding_dim: int = Field(512, ge=1, description="E (--task_embedding_dim)")
    task_hidden_dim: int = Field(128, ge=1, description="hidden width of the task hypernet 2E -> h -> p")
    projected_dim: int = Field(8, ge=1, description="p (--projected_task_embedding_dim)")
    activation: str = Field("gelu_new", description="the adapters' non-linearity")
    init_std: float = Field(
        0.02, gt=0, description="N(0, std) of the hypernet Linears/Embedding (BART's init)"
    )
