"""Evaluation: the FAME EER, score files and submission zips.

* :mod:`fva.evaluate.eer` -- :func:`compute_eer` exactly as the organisers compute it, and the EER threshold.
* :mod:`fva.evaluate.scores` -- strict ``<key> <score>`` files, aligning them with labels, one-file EER.
* :mod:`fva.evaluate.submission` -- writing, validating and scoring ``sub_score_<Lang>_<heard|unheard>.txt`` zips.

Functions return data and raise :class:`fva.errors.FvaError` for problems the user can fix; they never print.
"""

from fva.evaluate.eer import compute_eer, eer_threshold
from fva.evaluate.scores import EvalResult, align, evaluate_files, read_scores, write_scores
from fva.evaluate.submission import (CONDITIONS, SubmissionResult, evaluate_submission, submission_languages,
                                     validate_submission, write_submission)

__all__ = ["compute_eer", "eer_threshold", "EvalResult", "align", "evaluate_files", "read_scores", "write_scores",
           "CONDITIONS", "SubmissionResult", "evaluate_submission", "submission_languages", "validate_submission",
           "write_submission"]
