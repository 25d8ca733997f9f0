"""`lf-wrap validate FILE`: one check for every kind of file lf-wrap reads, like torchtune's
`tune validate`. It tells the kind from the file's keys and runs exactly the checks the kind's
command runs before any work (no training, no engine, no folder written). The kinds, their
commands and their checks are one registry, lf_wrap.stages.STAGES, which the commands read too:

    training recipe   lf-wrap train          plan_training: recipe, --smoke, LLaMA-Factory's own arguments, data, model
    eval recipe       lf-wrap eval           plan_eval: models, adapters' base, tasks and datasets, --out, serving
    merge recipe      lf-wrap merge recipe   check_inputs: adapters, base, shapes, method, hyper-parameters
    search recipe     lf-wrap merge search   plan_search: the eval recipe, adapters, tasks, rows, methods' ranks
    task file         lf-wrap data prepare   read_task_file: keys, slots, metric, name"""

from __future__ import annotations

from pathlib import Path

import yaml

from lf_wrap.core.errors import UserError
from lf_wrap.stages import STAGES, Checked


def kind_of(path: Path) -> str:
    """The kind of a recipe or task file, from its top-level keys."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot be read as YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe or task file is a YAML mapping")
    keys = set(data)
    for name, stage in STAGES.items():
        if stage.recognise(keys):
            return name
    told = "; ".join(f"{'an' if name[0] in 'aeiou' else 'a'} {name} has {stage.told_by}"
                     for name, stage in STAGES.items())
    raise UserError(f"{path}: not a recipe lf-wrap knows (keys: {', '.join(sorted(map(str, keys)))}); {told}")


def check(path: Path, sets: tuple[str, ...] = (), smoke: bool = False) -> Checked:
    kind = kind_of(path)
    if smoke and kind != "training recipe":
        raise UserError(f"--smoke: only a training recipe has a smoke set; {path} is a {kind}")
    stage = STAGES[kind]
    loaded = stage.load(path, tuple(sets), smoke=smoke) if smoke else stage.load(path, tuple(sets))
    return stage.check(loaded)
