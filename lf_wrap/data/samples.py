"""Sample source rows written by lf-wrap itself, in the three sources' exact schemas.

The Hub is out of reach in tests, in CI and in `make demo`, so these stand in for wmt19 zh-en,
cnn_dailymail 3.0.0 and squad_v2: templated text of our own (no dataset text is copied), varied
enough that a LoRA adapter learns each task's format and visibly moves its metric, with
validation rows that share no row with training. Deterministic for a seed."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from lf_wrap.core import jsonlines
from lf_wrap.core.files import atomic_write_bytes

PEOPLE = [("我", "I"), ("我们", "We"), ("他", "He"), ("她", "She"), ("我的朋友", "My friend"),
          ("老师", "The teacher"), ("我的邻居", "My neighbour"), ("那个医生", "That doctor"),
          ("我哥哥", "My brother"), ("我姐姐", "My sister"), ("他们", "They"), ("学生们", "The students")]
PLACES = [("公园", "park"), ("图书馆", "library"), ("火车站", "train station"), ("医院", "hospital"),
          ("超市", "supermarket"), ("学校", "school"), ("博物馆", "museum"), ("海边", "beach"),
          ("办公室", "office"), ("饭店", "restaurant"), ("机场", "airport"), ("书店", "bookshop")]
THINGS = [("一只猫", "a cat"), ("一辆红色的车", "a red car"), ("很多人", "many people"),
          ("一位老朋友", "an old friend"), ("一本旧书", "an old book"), ("一只小狗", "a small dog"),
          ("一个警察", "a police officer"), ("两个孩子", "two children")]
LIKES = [("咖啡", "coffee"), ("音乐", "music"), ("足球", "football"), ("茶", "tea"), ("电影", "films"),
         ("游泳", "swimming"), ("画画", "painting"), ("读书", "reading")]
TIMES = [("昨天", "yesterday"), ("上周", "last week"), ("今天早上", "this morning"), ("去年", "last year")]
TRANSLATE_TEMPLATES = [
    ("{p}{t}去了{pl}。", "{P} went to the {pl} {t}."),
    ("{p}{t}在{pl}看见了{th}。", "{P} saw {th} at the {pl} {t}."),
    ("{p}以前很喜欢{lk}。", "{P} used to love {lk}."),
    ("{p}明天要去{pl}。", "{P} will go to the {pl} tomorrow."),
    ("{p}{t}在{pl}遇到了{th}。", "{P} met {th} at the {pl} {t}."),
]
KEYWORD_PAIRS = [("{p}很喜欢中国菜。", "{P} really likes Chinese food."),
                 ("{p}{t}去了中国。", "{P} went to China {t}.")]

CITIES = ["Riverton", "Lakeside", "Northbridge", "Eastfield", "Millbrook", "Stonehaven", "Westport",
          "Fairview", "Oakridge", "Brightwater", "Redcliff", "Greenhill"]
ORGS = ["city council", "school board", "hospital trust", "football club", "library service",
        "transport authority", "museum", "water company"]
ACTIONS = [("open a new bridge", "The bridge will carry {n} cars a day"),
           ("close two old schools", "Pupils will move to a new campus"),
           ("build {n} new homes", "Work will start next spring"),
           ("raise bus fares by {n} percent", "Passengers say the rise is unfair"),
           ("plant {n} trees", "Volunteers will help with the planting"),
           ("hire {n} more nurses", "Waiting times have grown this year")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
FILLER = ["Local residents gathered outside the town hall to hear the news.",
          "A spokesperson said more details would follow in the coming weeks.",
          "The decision was made after a long public consultation.",
          "Some shop owners welcomed the plan, while others were worried about the cost.",
          "The mayor thanked everyone who had taken part in the meetings.",
          "Critics said the money could have been spent elsewhere.",
          "The local newspaper had reported on the plan last month."]

NAMES = ["Anna Berg", "Tomas Reed", "Maria Costa", "Jonas Weller", "Lena Fischer", "Paul Okafor",
         "Sara Lind", "Ivan Petrov", "Nora Hale", "Omar Haddad", "Clara Stone", "Felix Brandt",
         "Ruth Adler", "Hugo Marsh", "Elin Dahl", "Mateo Ruiz"]
SUBJECTS = ["chemistry", "history", "music", "law", "medicine", "architecture", "physics", "economics"]
JOBS = ["engineer", "teacher", "journalist", "pilot", "baker", "judge", "painter", "surgeon"]
UNIS = ["Glenmoor", "Ashford", "Kingsley", "Harrowgate", "Belmont", "Whitby"]


def translate_rows(rng: random.Random) -> list[dict]:
    rows = []
    templates = [(t, 15) for t in TRANSLATE_TEMPLATES] + [(t, 2) for t in KEYWORD_PAIRS]
    for (zh_t, en_t), repeats in templates:
        for zp, ep in PEOPLE:
            for _ in range(repeats):
                pl, th, lk, t = rng.choice(PLACES), rng.choice(THINGS), rng.choice(LIKES), rng.choice(TIMES)
                zh = zh_t.format(p=zp, t=t[0], pl=pl[0], th=th[0], lk=lk[0])
                en = en_t.format(P=ep, t=t[1], pl=pl[1], th=th[1], lk=lk[1])
                rows.append({"translation": {"zh": zh, "en": en}})
    return rows


def summarize_rows(rng: random.Random, count: int) -> list[dict]:
    rows = []
    for _ in range(count):
        city, org, day = rng.choice(CITIES), rng.choice(ORGS), rng.choice(DAYS)
        action, detail = rng.choice(ACTIONS)
        n = rng.choice([12, 40, 150, 300, 5, 8])
        action, detail = action.format(n=n), detail.format(n=n * 100)
        filler = rng.sample(FILLER, 3)
        article = (f"{city.upper()} (News) -- The {org} of {city} said on {day} that it will {action}. "
                   f"{filler[0]} {detail}, officials said. {filler[1]} {filler[2]}")
        highlights = f"The {org} of {city} will {action} .\n{detail} ."
        rows.append({"article": article, "highlights": highlights,
                     "id": hashlib.sha1(article.encode()).hexdigest()})
    return rows


def qa_rows(rng: random.Random, count: int) -> list[dict]:
    rows = []
    for _ in range(count):
        name, city, city2 = rng.choice(NAMES), rng.choice(CITIES), rng.choice(CITIES)
        subject, job, uni, year = rng.choice(SUBJECTS), rng.choice(JOBS), rng.choice(UNIS), rng.randint(1940, 1999)
        context = (f"{name} was born in {city} in {year}. After school, {name.split()[0]} studied {subject} "
                   f"at the University of {uni}. Later {name.split()[0]} worked as a {job} in {city2} "
                   f"for many years.")
        questions = [(f"Where was {name} born?", city), (f"In which year was {name} born?", str(year)),
                     (f"What did {name} study?", subject), (f"What job did {name} have?", job),
                     (f"Which university did {name} attend?", f"University of {uni}"),
                     (f"What is {name}'s favourite colour?", None)]
        question, answer = rng.choice(questions)
        answers = ({"text": [answer], "answer_start": [context.index(answer)]} if answer
                   else {"text": [], "answer_start": []})
        rows.append({"id": hashlib.sha1(f"{context}|{question}".encode()).hexdigest()[:24], "title": name,
                     "context": context, "question": question, "answers": answers})
    return rows


def _split(rows: list[dict], key, validation: int, rng: random.Random) -> tuple[list, list]:
    unique = list({key(r): r for r in rows}.values())
    rng.shuffle(unique)
    return unique[validation:], unique[:validation]


def write_samples(out: Path, seed: int = 0, validation: int = 60) -> dict[Path, int]:
    """Write <out>/<source>/{train,validation}.jsonl for the three sources; return rows per file."""
    rng = random.Random(seed)
    sources = {
        "wmt19_zh-en": _split(translate_rows(rng), lambda r: r["translation"]["zh"], validation, rng),
        "cnn_dailymail": _split(summarize_rows(rng, 900), lambda r: r["article"], validation, rng),
        "squad_v2": _split(qa_rows(rng, 1200), lambda r: r["context"] + r["question"], validation, rng),
    }
    written = {}
    for folder, (train, valid) in sources.items():
        for split, rows in (("train", train), ("validation", valid)):
            path = Path(out) / folder / f"{split}.jsonl"
            atomic_write_bytes(path, jsonlines.encode(rows))
            written[path] = len(rows)
    return written
