"""Per-dataset settings an admin changes from the dataset's page (not the raw Django admin)."""
from __future__ import annotations

from annotator.models import Dataset, User

MAX_OVERLAP = 10


class SettingsRefused(ValueError):
    pass


def update_settings(dataset: Dataset, user: User, *, label_overlap, show_defect_folder: bool) -> Dataset:
    """Validate everything first; a refusal changes nothing."""
    if not user.is_admin_role:
        raise PermissionError("Only admins change a dataset's settings.")
    try:
        overlap = int(label_overlap)
    except (TypeError, ValueError):
        raise SettingsRefused(f"Overlap must be a whole number from 1 to {MAX_OVERLAP}, not {label_overlap!r}.")
    if not 1 <= overlap <= MAX_OVERLAP:
        raise SettingsRefused(f"Overlap must be a whole number from 1 to {MAX_OVERLAP}, not {overlap}.")
    dataset.label_overlap = overlap
    dataset.show_defect_folder = bool(show_defect_folder)
    dataset.save(update_fields=["label_overlap", "show_defect_folder"])
    return dataset
