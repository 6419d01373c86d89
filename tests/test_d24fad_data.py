"""Few-shot data: training episodes, support sets per seed, the leave-one-dataset-out datamodule
and its bad-input errors."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from adlab.data import AnomalyDataModule, DatasetError
from adlab.data.episodes import Episodes, draw_episodes
from adlab.data.lodo import LodoDataModule, with_protocol
from adlab.data.records import Sample
from adlab.data.support import support_sets
from tests.data_trees import write_png
from tests.fewshot_trees import domain_tree, domains

CONF = Path(__file__).resolve().parents[1] / "conf"
LODO = OmegaConf.to_container(OmegaConf.load(CONF / "protocol" / "lodo.yaml"))


def samples(n: int, source: str) -> list[Sample]:
    return [Sample(f"/{source}/train/good/{i:03d}.png", 0, "train", source) for i in range(n)]


# --- episodes ---------------------------------------------------------------------------------
def official_episodes(lists: dict[str, list[str]], shots: int, seed: int) -> list[tuple]:
    """The official FSAD_Dataset_train.load_dataset_folder draw, written out on path lists."""
    random.seed(seed)
    shuffled = {}
    for name, files in lists.items():
        files = sorted(files)
        random.shuffle(files)
        shuffled[name] = files
    out = []
    for files in shuffled.values():
        for query in files:
            supports = []
            for _ in range(shots):
                r = random.randint(0, len(files) - 1)
                while files[r] == query:
                    r = random.randint(0, len(files) - 1)
                supports.append(files[r])
            out.append((query, tuple(supports)))
    return out


def test_episodes_replay_the_official_draw():
    sources = {"aptos": samples(7, "aptos"), "rsna": samples(5, "rsna")}
    ours = draw_episodes(sources, 4, random.Random(111))
    lists = {k: [s.path for s in v] for k, v in sources.items()}
    assert [(e.query.path, tuple(s.path for s in e.supports)) for e in ours] == (
        official_episodes(lists, 4, 111)
    )


def test_supports_come_from_the_query_source_and_are_never_the_query():
    sources = {"a": samples(3, "a"), "b": samples(2, "b")}
    episodes = draw_episodes(sources, 8, random.Random(0))
    assert len(episodes) == 5
    for e in episodes:
        assert len(e.supports) == 8
        assert all(s.category == e.query.category for s in e.supports)
        assert all(s.path != e.query.path for s in e.supports)
    assert any(len(set(e.supports)) < 8 for e in episodes)  # drawn with replacement


def test_same_seed_same_episodes_and_resampling_per_epoch():
    sources = {"a": samples(6, "a"), "b": samples(6, "b")}
    fixed = Episodes(sources, 2, seed=3, resample="never")
    assert fixed.of_epoch(0) == Episodes(sources, 2, seed=3, resample="never").of_epoch(0)
    assert fixed.of_epoch(5) == fixed.of_epoch(0)
    assert fixed.of_epoch(0) != Episodes(sources, 2, seed=4, resample="never").of_epoch(0)
    redrawn = Episodes(sources, 2, seed=3, resample="epoch")
    assert redrawn.of_epoch(0) == fixed.of_epoch(0)
    assert redrawn.of_epoch(1) != redrawn.of_epoch(0)
    assert redrawn.of_epoch(1) == Episodes(sources, 2, 3, "epoch").of_epoch(1)
    with pytest.raises(DatasetError, match="protocol.resample"):
        Episodes(sources, 2, 3, "sometimes")
    with pytest.raises(DatasetError, match="at least one other image"):
        draw_episodes({"a": samples(1, "a")}, 2, random.Random(0))


# --- support sets -----------------------------------------------------------------------------
def kshot(**kwargs) -> dict:
    return {"name": "kshot", "shots": 2, "seeds": [0], **kwargs}


def test_support_sets_per_seed_are_reproducible_and_never_test_images(tmp_path):
    domain_tree(tmp_path, "ct", 0.0, n_train=10, n_test=3, size=32)
    dm = AnomalyDataModule(dataset=dataset("d24fad_his", tmp_path), sampler=kshot(seeds=[0, 1, 2]),
                           image_size=32, normalize="none")  # fmt: skip
    dm.setup()
    sets = dm.reference_sets()
    assert [s.label for s in sets] == ["seed0", "seed1", "seed2"]
    assert len({tuple(s.files) for s in sets}) == 3  # different seeds, different supports
    test = {s.path for s in dm.splits["test"]}
    for s in sets:
        assert len(s.files) == 2 and not set(s.files) & test
        assert all("/train/good/" in f for f in s.files)
    again = AnomalyDataModule(dataset=dataset("d24fad_his", tmp_path), image_size=32,
                              sampler=kshot(seeds=[0, 1, 2]), normalize="none")  # fmt: skip
    again.setup()
    assert [s.files for s in again.reference_sets()] == [s.files for s in sets]
    assert dm.splits["train"] == list(sets[0].samples)  # a method without supports trains on it
    assert dm.reference_images(sets[1]).shape == (2, 3, 32, 32)


def test_support_dir_is_read_and_checked(tmp_path):
    domain_tree(tmp_path / "his", "ct", 0.0, n_train=6, n_test=2, size=32)
    folder = tmp_path / "med-kshot" / "his" / "train" / "shot2" / "good2"
    folder.mkdir(parents=True)
    for name in ("000.png", "003.png"):
        shutil.copy(tmp_path / "his" / "train" / "good" / name, folder / name)
    dm = AnomalyDataModule(dataset=dataset("d24fad_his", tmp_path / "his"), image_size=32,
                           sampler=kshot(support_dir=str(folder)), normalize="none")  # fmt: skip
    dm.setup()
    (only,) = dm.reference_sets()
    assert only.label == "support_dir"
    assert [Path(f).name for f in only.files] == ["000.png", "003.png"]
    assert dm.reference_images().shape == (2, 3, 32, 32)
    with pytest.raises(DatasetError, match=r"holds 2 images but sampler.shots=4"):
        support_sets([], [], kshot(shots=4, support_dir=str(folder)))
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="notes.txt is not an image file"):
        support_sets([], [], kshot(support_dir=str(folder)))
    (folder / "notes.txt").unlink()
    (folder / "003.png").unlink()
    shutil.copy(tmp_path / "his/test/bad/001.png", folder / "004.png")  # a copy of a test image
    test = [Sample(str(p), 1, "test") for p in sorted((tmp_path / "his/test/bad").iterdir())]
    with pytest.raises(DatasetError, match=r"same content as test image .*001.png"):
        support_sets([], test, kshot(support_dir=str(folder)))
    with pytest.raises(DatasetError, match="does not exist"):
        support_sets([], [], kshot(support_dir=str(tmp_path / "nowhere")))


def test_a_support_that_is_a_test_file_and_too_many_shots_fail(tmp_path):
    pool = samples(3, "a")
    with pytest.raises(DatasetError, match=r"sampler.shots=4 but category 'a' has only 3"):
        support_sets(pool, [], kshot(shots=4))
    real = write_png(tmp_path / "train" / "good" / "0.png")
    write_png(tmp_path / "train" / "good" / "1.png", value=3)
    pool = [Sample(str(p), 0, "train", "a") for p in sorted((tmp_path / "train/good").iterdir())]
    with pytest.raises(DatasetError, match="is also a test image"):
        support_sets(pool, [Sample(str(real), 0, "test", "a")], kshot(shots=2))


# --- leave one dataset out --------------------------------------------------------------------
def dataset(name: str, root: Path) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "dataset" / f"{name}.yaml"))
    return {**cfg, "root": str(root)}


def lodo(tmp_path: Path, target: str = "d24fad_his", **protocol) -> LodoDataModule:
    roots = domains(tmp_path / "data", size=32, n_train=6, n_test=2)
    members = list(roots)
    config = {**LODO, "members": members, "roots": {k: str(v) for k, v in roots.items()}}
    config.update(protocol)
    # the target's folder comes from protocol.roots too (dataset.root points nowhere)
    target_dm = AnomalyDataModule(dataset=dataset(target, tmp_path / "not-here"),
                                  sampler=kshot(seeds=[0, 1]), image_size=32, normalize="none",
                                  batch_size=4, seed=7)  # fmt: skip
    return with_protocol(target_dm, config, CONF / "dataset")


def test_lodo_trains_on_the_other_members_and_tests_on_the_target(tmp_path):
    dm = lodo(tmp_path)
    dm.setup()
    assert dm.batch_keys("train") >= {"image", "support"} and "support" not in dm.batch_keys("test")
    target_root = str(tmp_path / "data" / "d24fad_his")
    batches = list(dm.train_dataloader())
    assert len(batches) == 3  # 2 sources x 6 normals, batches of 4, drop_last
    sources = set()
    for batch in batches:
        assert batch["support"].shape == (4, 2, 3, 32, 32)
        sources.update(batch["category"])
        for path in batch["path"]:
            assert not path.startswith(target_root)
    assert sources == {"lag", "aptos"}
    assert any(len(set(b["category"])) > 1 for b in batches)  # batches mix sources
    for episode in dm.episodes.of_epoch(0):  # the target never enters training, not even as support
        for s in (episode.query, *episode.supports):
            assert not s.path.startswith(target_root)
    for support in dm.reference_sets():
        assert all(f.startswith(target_root + "/train/good") for f in support.files)
    tested = [p for b in dm.test_dataloader() for p in b["path"]]
    assert tested and all(p.startswith(target_root + "/test") for p in tested)
    summary = dm.summary()
    members = summary["members"]
    assert set(members) == {"d24fad_his", "d24fad_lag", "d24fad_aptos"}
    assert members["d24fad_his"]["role"] == "target" and members["d24fad_his"]["support_pool"] == 6
    assert members["d24fad_lag"]["train_normal"] == 6 and members["d24fad_lag"]["fingerprint"]
    assert summary["train"] == {"normal": 12} and summary["test"] == {"normal": 2, "anomalous": 2}


def test_lodo_episode_order_is_fixed_by_the_seed(tmp_path):
    one, two = lodo(tmp_path / "a"), lodo(tmp_path / "b")  # the same trees in two places
    one.setup()
    two.setup()

    def names(dm):
        return [
            (e.query.category, Path(e.query.path).name, [Path(s.path).name for s in e.supports])
            for e in dm.episodes.of_epoch(0)
        ]

    assert names(one) == names(two)
    for a, b in zip(one.train_dataloader(), two.train_dataloader()):
        assert [Path(p).name for p in a["path"]] == [Path(p).name for p in b["path"]]
        assert torch.equal(a["support"], b["support"])


def test_lodo_bad_inputs(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset=d24fad_rsna is not among protocol.members"):
        lodo(tmp_path / "a", target="d24fad_rsna")
    dm = lodo(tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "data" / "d24fad_lag" / "train")
    layout = r"<root>/train/good, <root>/test/good, <root>/test/bad"
    with pytest.raises(DatasetError, match=rf"d24fad_lag: missing folder .*layout: {layout}"):
        dm.setup()
    dm = lodo(tmp_path / "d")
    shutil.rmtree(tmp_path / "d" / "data" / "d24fad_aptos")
    with pytest.raises(DatasetError, match=rf"d24fad_aptos: folder .* does not exist.*{layout}"):
        dm.setup()
    full = lodo(tmp_path / "c")
    full.target.sampler = {"name": "full"}
    with pytest.raises(DatasetError, match="use sampler=kshot"):
        full.setup()
    with pytest.raises(DatasetError, match="protocol='loo' is unknown"):
        with_protocol(full.target, {"name": "loo"}, CONF / "dataset")
