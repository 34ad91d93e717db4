"""Export all-MiniLM-L6-v2 to ONNX: ``python -m heli.testing._export_minilm MODEL_DIR OUT``."""

from __future__ import annotations

import os
import sys
import warnings

SEQ_AXES = {0: "batch", 1: "seq"}


def export(model_dir: str, out_path: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()

    class Encoder(torch.nn.Module):
        """Positional inputs, one output: what an ONNX deployment sees."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 1037, 2117, 6251, 102]])
    mask = (ids != 0).long()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Encoder(model), (ids, mask, torch.zeros_like(ids)), out_path,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={name: SEQ_AXES for name in
                          ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")},
            opset_version=14, dynamo=False,
        )


if __name__ == "__main__":
    export(sys.argv[1], sys.argv[2])
