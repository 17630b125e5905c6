"""Encoder training for the unheard conditions: VoxCeleb2 language labels (``lid``), a speaker ECAPA trained
without a language (``speaker``) and the voice age-gender ECAPA on CommonVoice (``age_gender``).

The trainers are speechbrain ``Brain`` subclasses; under ``torchrun`` they use speechbrain's distributed
data parallel. They write model folders in the formats that ``fva extract`` loads.
"""
