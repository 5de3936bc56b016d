"""train_ds.validate on a real tiny LISA and the toy ReasonSeg val split, in this process."""

from functools import partial

import pytest
import torch
from torch.utils.data import DataLoader

import train_ds
from tests.toy_runs import lisa_of_base, make_toy_inputs
from tools.tiny_base import TinyBaseSizes
from utils.collate import collate_fn
from utils.data import SampleBuilder, ValDataset
from utils.distributed import DistributedInfo
from utils.metrics import intersection_and_union, mask_iou
from utils.transforms import ClipTransform

SIZES = TinyBaseSizes(
    vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2, sam_image_size=128
)


class EngineLike:
    """What validate() uses of a DeepSpeed engine: eval() and module."""

    def __init__(self, module):
        self.module = module
        self.grad_enabled_in_llm = []
        module.model.register_forward_pre_hook(
            lambda *_: self.grad_enabled_in_llm.append(torch.is_grad_enabled())
        )

    def eval(self):
        self.module.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    data, base = make_toy_inputs(
        root, SIZES, num_train=2, num_val=5, num_test=1, num_refer=5, num_sem_seg=2
    )
    torch.manual_seed(0)
    model, tokenizer = lisa_of_base(base)
    builder = SampleBuilder(
        clip_transform=ClipTransform.from_pretrained(base["vision_tower"]),
        image_size=SIZES.sam_image_size,
        conv_template="llava_v1",
    )
    dataset = ValDataset(data, "ReasonSeg|val", builder)
    loader = DataLoader(
        dataset,
        batch_size=2,
        collate_fn=partial(
            collate_fn,
            tokenizer=tokenizer,
            conv_type="llava_v1",
            use_mm_start_end=True,
            num_image_tokens=model.model.num_image_tokens,
        ),
    )
    return model, loader


def test_validate_scores_and_prompt_cosine_without_autograd(setup):
    model, loader = setup
    engine = EngineLike(model)
    info = DistributedInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    giou, ciou, cosine = train_ds.validate(engine, loader, info, torch.float32)

    assert engine.grad_enabled_in_llm and not any(engine.grad_enabled_in_llm)
    ious, intersections, unions, prompts = [], 0, 0, []
    with torch.no_grad():
        for batch in loader:
            output = model.predict_masks(batch)
            prompts.append(output.pred_embeddings)
            for pred, gt in zip(output.pred_masks, batch.gt_masks, strict=True):
                intersection, union = intersection_and_union(pred > 0, gt)
                ious += mask_iou(intersection, union).tolist()
                intersections += int(intersection.sum())
                unions += int(union.sum())
    assert giou == pytest.approx(sum(ious) / len(ious))
    assert ciou == pytest.approx(intersections / unions)
    units = torch.nn.functional.normalize(torch.cat(prompts).double(), dim=-1)
    count = units.shape[0]
    assert count == 5  # one [SEG] per val image
    pairs = (units @ units.T).sum() - count
    assert cosine == pytest.approx(float(pairs) / (count * (count - 1)))
