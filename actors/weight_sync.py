"""The receiving end of a weight push, inside the vLLM worker process.

`WeightSyncExtension` is mixed into vLLM's worker class (`worker_extension_cls`): its methods run
inside the worker, where `self` is the vLLM worker, and are called through
`LLM.collective_rpc(name, args=...)`. Two ways in, one loader: named tensors (object-store path,
in-process on CPU) or buckets received over the weight group (NCCL on GPU; gloo on CPU in tests).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from cluster.core.collective import DEFAULT_BUCKET_BYTES, new_group, recv_weights

log = logging.getLogger(__name__)


class WeightSyncExtension:
    """Mixed into the vLLM worker. Methods are called through `LLM.collective_rpc(name, args=...)`."""

    def evorl_load_weights(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Reload HF-named checkpoint weights in place (the CPU backend repacks linears, so
        `model.load_weights` alone fails; `reload_weights` re-runs the post-load processing)."""
        self.reload_weights(weights_iterator=iter(named), is_checkpoint_format=True)
        self._evorl_fix_tied_head()

    def evorl_load_safetensors(self, blob: bytes) -> None:
        from safetensors.torch import load

        self.evorl_load_weights(load(blob).items())

    def _evorl_fix_tied_head(self) -> None:
        # vLLM bug (0.32, CPU): with tied embeddings the LM head keeps its old packed weight after a
        # reload; re-running its quant method's post-load step repacks it from the new embedding.
        model = self.model_runner.get_model()
        hf_cfg = self.model_runner.model_config.hf_text_config
        head = getattr(model, "lm_head", None)
        if getattr(hf_cfg, "tie_word_embeddings", False) and head is not None:
            head.quant_method.process_weights_after_loading(head)

    def init_weight_group(self, master_addr: str, port: int, rank_offset: int, world_size: int) -> None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        rank = rank_offset + self.rank
        self._evorl_group = new_group(master_addr, port, rank, world_size, backend)
        log.info("weight group joined: rank %d/%d (%s)", rank, world_size, backend)

    def receive_weights(
        self,
        names: list[str],
        shapes: list[tuple[int, ...]],
        dtypes: list[str],
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    ) -> None:
        group = getattr(self, "_evorl_group", None)
        if group is None:
            raise RuntimeError("receive_weights before init_weight_group")
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
        self.evorl_load_weights(recv_weights(group, names, shapes, dtypes, device, bucket_bytes))
