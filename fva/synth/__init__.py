"""Synthetic data in the real layouts, above ``fva.data``, ``fva.extract`` and ``fva.train`` (it uses them all;
none of them uses it): the demo datasets (:mod:`~fva.synth.demo`: MAV-Celeb V3's layout, and
:mod:`~fva.synth.demo_v4`: v4's), the recipes' world (:mod:`~fva.synth.world`: MAV-Celeb, VoxCeleb2 and
CommonVoice with real m4a/mp4/mp3 media and a stand-in LID model), seeded demo checkpoints in each encoder's
real format (:mod:`~fva.synth.checkpoints`), and the builders the tests and benchmarks share
(:mod:`~fva.synth.testing`: feature caches with identity structure, tiny experiments and configs)."""
