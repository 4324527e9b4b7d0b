"""`curate plan`: parameters counted from the config alone (checked against the loaded model and peft, and by hand
for Llama-3.1-8B), the memory and FLOPs rules, the editable GPU table, this machine's measured throughput, and the
plan shown before `curate run`."""

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from conftest import sentiment_entry, sentiment_study, write_catalog, write_study
from tasks.core import plan as P
from tasks.schema.study import Study


def _study(tmp_path, tiny_model, **overrides) -> Study:
    write_catalog(tmp_path / "catalog", {"clean": sentiment_entry("candidate_clean.jsonl")})
    return Study.model_validate(sentiment_study(tmp_path, tiny_model, ["clean"], **overrides))


def test_the_shape_comes_from_the_config_and_matches_the_loaded_model(tmp_path, tiny_model):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from tasks.backends.training import lora_config
    from tasks.ops.plan import model_shape

    study = _study(tmp_path, tiny_model)
    shape = model_shape(study)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.embedding_params == model.get_input_embeddings().weight.numel()  # tied head: counted once
    peft = get_peft_model(model, lora_config(study.training))
    assert shape.lora_params == peft.get_nb_trainable_parameters()[0]


def test_an_8b_model_is_planned_from_its_shipped_config_by_hand(tmp_path, tiny_model):
    from tasks.ops.plan import model_shape

    study = _study(tmp_path, tiny_model, model={"source": "meta-llama/Llama-3.1-8B-Instruct"},
                   training={"lora": {"r": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                   "up_proj", "down_proj"]}})
    shape = model_shape(study)
    d, kv, ff, layers, vocab = 4096, 1024, 14336, 32, 128256
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * ff + 2 * d  # q, o; k, v; gate, up, down; two RMSNorms
    assert shape.params == layers * per_layer + 2 * vocab * d + d == 8_030_261_248  # + embedding, LM head, final norm
    assert shape.lora_params == layers * 16 * (2 * (d + d) + 2 * (d + kv) + 3 * (d + ff)) == 41_943_040
    w = P.Workload(method="sft", batch_size=16, max_length=256, train_tokens=[100_000], eval_tokens=0,
                   generated_tokens=0)
    mem = P.memory(shape, w, full=False, quant4=False)
    assert mem["weights"] == pytest.approx(8_030_261_248 * 2 / 2 ** 30)  # 14.96 GiB of bf16 weights
    assert mem["trainable + optimizer"] == pytest.approx(41_943_040 * 16 / 2 ** 30)
    assert mem["activations"] == pytest.approx((34 * 16 * 256 * d * layers + 8 * 16 * 256 * vocab) / 2 ** 30)
    assert P.memory(shape, w, full=True, quant4=False)["trainable + optimizer"] == pytest.approx(16 * 8_030_261_248 / 2 ** 30)
    assert P.train_flops(shape, 1000, "sft", False) == 4 * 8_030_261_248 * 1000  # LoRA: forward + activation grads
    assert P.train_flops(shape, 1000, "dpo", False) == 6 * 8_030_261_248 * 1000  # + the reference forward


def test_the_gpu_table_is_read_from_yaml_and_decides_what_fits(tmp_path, tiny_model):
    from cli.plan import build

    study = _study(tmp_path, tiny_model, model={"source": "meta-llama/Llama-3.1-8B-Instruct"})
    table = tmp_path / "gpus.yaml"
    table.write_text(yaml.safe_dump({"mfu": 0.5, "gpus": [
        {"name": "small", "memory_gb": 8, "bf16_tflops": 100, "price_per_hour": 1.0},
        {"name": "big", "memory_gb": 80, "bf16_tflops": 100, "price_per_hour": 3.0}]}))
    plan = build(study, table)
    rows = {r["gpu"]: r for r in plan["rows"]}
    assert rows["small"]["setup"] == "does not fit" and "cost" not in rows["small"]
    assert plan["best"]["gpu"] == "big" and plan["best"]["setup"] == "LoRA bf16"
    assert plan["best"]["cost"] == pytest.approx(plan["best"]["gpu_h"] * 3.0)
    table.write_text(yaml.safe_dump({"gpus": [{"name": "x", "memory_gb": 8}]}))
    from tasks.errors import WorkbenchError
    with pytest.raises(WorkbenchError, match="every GPU needs name, memory_gb, bf16_tflops, price_per_hour"):
        build(study, table)


def test_curate_plan_measures_this_machine_and_run_shows_the_plan(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    path = write_study(tmp_path, sentiment_study(tmp_path, tiny_model, ["clean"]))
    write_catalog(tmp_path / "catalog", {"clean": sentiment_entry("candidate_clean.jsonl")})
    first = CliRunner().invoke(app, ["plan", str(path)])
    assert first.exit_code == 0, first.output
    points = sum(len(_study(tmp_path, tiny_model).arm_points(a)) for a in ("control", "clean"))
    assert "plan fixture-study:" in first.output and f"{points} points (2 arms)" in first.output
    assert "this machine" not in first.output and "cheapest GPU that fits: 2 x T4 (LoRA bf16)" in first.output
    measured = CliRunner().invoke(app, ["plan", str(path), "--measure"])
    assert measured.exit_code == 0, measured.output
    assert "training tokens/s" in measured.output and "this machine (" in measured.output
    assert (tmp_path / "cache" / "throughput.json").exists()


def test_time_left_places_the_remaining_points_on_the_workers_largest_first():
    from tasks.core.plan import time_left

    took = {16: [10.0, 12.0], 128: [100.0]}
    assert time_left([128, 128, 16], took, workers=2) == 111.0  # 100 | 100, then 11 on the first free worker
    assert time_left([128], took, workers=2) == 100.0  # a lone last point takes its own time, not half of it
    assert time_left([64], {16: [10.0]}, workers=1) == 40.0  # not measured yet: the nearest size, scaled by rows
    assert time_left([8], {16: [10.0]}, workers=1) == 10.0  # smaller than any measured: not scaled down
    assert time_left([16], {}, workers=2) is None and time_left([], took, workers=2) == 0.0


def test_busy_share_is_work_over_workers_times_the_span_points_ran():
    from tasks.core.plan import busy_share

    # two workers: one busy 0-10 and 10-20, the other 0-10 then idle while the last point runs alone
    b = busy_share([(0, 10), (10, 20), (0, 10)], workers=2)
    assert (b["busy_s"], b["wall_s"], b["share"]) == (30, 20, 0.75)
    assert busy_share([], 2) is None and busy_share([(5, 5)], 1)["share"] == 1.0


def test_worker_slots_start_the_largest_points_first_once_every_arm_has_sent_its_points():
    """The first arm to arrive must not fill the workers with its small points while a larger one is on its way;
    an arm that never sends its points (it failed first) holds the others up for gate_s at most."""
    import threading
    import time

    from tasks.ops.workers import Slots

    def run(slots, arrivals):
        started, threads = [], []

        def point(size):
            with slots.taken(priority=-size):
                started.append(size)
                time.sleep(0.02)

        for size, delay in arrivals:
            time.sleep(delay)
            threads.append(threading.Thread(target=point, args=(size,)))
            threads[-1].start()
        for t in threads:
            t.join(5)
        return started

    slots = Slots(1, gate_s=5.0)
    slots.expect(4)
    assert run(slots, [(16, 0), (32, 0), (128, 0.05), (64, 0.05)]) == [128, 64, 32, 16]
    slots = Slots(1, gate_s=0.3)
    slots.expect(3)  # the third point never comes
    start = time.monotonic()
    assert run(slots, [(16, 0), (64, 0.05)]) == [64, 16] and 0.25 < time.monotonic() - start < 3
    slots = Slots(2)  # nothing expected (a pool worker's own slots): first come, first served
    assert sorted(run(slots, [(16, 0), (128, 0.05)])) == [16, 128]
