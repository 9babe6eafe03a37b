"""Issue 20 item 4: TensorBoard opens on the answer. A real (tiny) run's event file holds a custom-scalars layout
(HR@10 vs ItemPop, ε, fairness first), no one-point ``final/*``/``best/*`` cards, audit events as text rather than an
``audit/breaches`` scalar, and every group choice in the HParams table."""

from conftest import tiny_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from fedsim.run import run

GROUP_CHOICES = ("dataset.name", "model.name", "strategy.name", "personalization.name", "privacy.mechanism",
                 "mitigation.name", "secagg.enabled", "consent.opt_out_rate", "attack.item_set", "strategy.robust",
                 "audit.enabled")  # fmt: skip


def test_the_event_file_opens_on_the_answer(tmp_path):
    cfg = tiny_config("audit.rules.utility_vs_itempop.min=1.0")  # a warn rule that breaks at every evaluation
    run(cfg, tmp_path)
    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "test/hr@10" in scalars and "test/itempop_hr@10" in scalars  # ItemPop drawn beside the model
    assert not [t for t in scalars if t.startswith(("final/", "best/", "audit/"))]

    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    first = layout.category[0]
    assert "answer" in first.title and "HR@10" in first.chart[0].title
    assert "hr@10" in first.chart[0].multiline.tag[0] and "itempop" in first.chart[0].multiline.tag[1]
    assert [c.title for c in layout.category[1:3]] == ["2. privacy", "3. fairness"]

    audit = events.Tensors("audit/text_summary")
    assert audit and "utility_vs_itempop" in audit[0].tensor_proto.string_val[0].decode()

    hparams = plugin_data_pb2.HParamsPluginData()
    hparams.ParseFromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    recorded = hparams.session_start_info.hparams
    assert set(GROUP_CHOICES) <= set(recorded), set(GROUP_CHOICES) - set(recorded)
    assert recorded["name"].string_value == cfg.name
    experiment = plugin_data_pb2.HParamsPluginData()
    experiment.ParseFromString(events.PluginTagToContent("hparams")["_hparams_/experiment"])
    metrics = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"test/hr@10", "val/hr@10"} <= metrics <= set(scalars)  # the table reads the per-round series
