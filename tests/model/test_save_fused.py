import torch

from codegemma.infer.fuse import fuse_projections
from codegemma.model.checkpoint import load_model, save_model
from codegemma.model.config import get_preset
from codegemma.model.transformer import Gemma


def test_a_model_fused_for_inference_saves_and_loads_back(tmp_path):
    """Fused q/k/v and gate/up weights are views of one buffer; saving must still write each tensor."""
    model = Gemma(get_preset("debug")).init_weights(0).eval()
    tokens = torch.tensor([[2, 5, 9, 300, 11]])
    with torch.no_grad():
        reference = model(tokens)
    assert fuse_projections(model) > 0
    out = save_model(model, model.config, tmp_path / "fused")
    again, _ = load_model(out, device="cpu")
    with torch.no_grad():
        assert torch.equal(again(tokens), reference)
