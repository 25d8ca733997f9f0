"""The joint reference adapter (SearchRecipe.joint): one LoRA adapter trained on every task at once
(recipes/joint.yaml). A merge of specialists is worth its trouble only if it keeps about what joint
training gives; so the joint adapter is scored on the report rows beside the sum, linear 0.5 and
best merges, patched into the engine like a specialist (lf_wrap.search.scorer), never searched."""

from __future__ import annotations

from lf_wrap.core.errors import UserError
from lf_wrap.evaluation import EvalRecipe, ModelEntry, resolve_models
from lf_wrap.merge.checks import MergePlan, check_inputs
from lf_wrap.merge.config import MergeConfig


def check_joint(recipe, eval_recipe: EvalRecipe, plan: MergePlan) -> MergePlan:
    """The joint adapter, read by the eval's reader (a LoRA adapter on the eval recipe's base) and
    then as a merge of itself alone at weight 1: the deltas patched in to score it. The engine
    patches the modules the specialists target, so the joint adapter may target no other."""
    entries = [ModelEntry(name="base"), ModelEntry(name="joint", path=recipe.joint)]
    model = resolve_models(eval_recipe.model_copy(update={"models": entries}))[1]
    if model.kind != "adapter":
        raise UserError(f"joint: {recipe.joint} is not a LoRA adapter folder (no adapter_config.json)")
    joint = check_inputs(MergeConfig(adapters=[model.path], method="linear", weights=[1.0],
                                     base=eval_recipe.model_name_or_path, out=str(plan.out)))
    other = sorted(set(joint.modules) - set(plan.modules))
    if other:
        raise UserError(f"joint: {recipe.joint} targets {other[0]}"
                        + (f" and {len(other) - 1} more modules" if len(other) > 1 else "")
                        + ", which the specialists do not; the search patches only the modules they target: train "
                          "the joint adapter with their lora_target")
    return joint
