"""Storing and selecting calibration profiles.

Profiles describe hardware, not anyone's job: every key can list and use every profile (the
runtime worker that measured a node and the engineer who plans on it often hold different
keys). The key that stored one is recorded.
"""

from __future__ import annotations

import uuid

from pydantic import ValidationError
from sqlalchemy.orm import Session

from costmodel.errors import FieldProblem, SpecError
from costmodel.profile import CalibrationProfile
from costmodel.specs.gpus import canonical_gpu_name
from service.auth.service import Principal
from service.calibrations import repository
from service.calibrations.schemas import CalibrationBody, CalibrationOut, CalibrationSummary
from service.db.models import Calibration
from service.exceptions import NotFound
from service.validation import require_finite


def parse_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def _gpu_of(body: CalibrationBody) -> str:
    if body.gpu is not None:
        return body.gpu  # canonicalised by the profile's own validator
    named = body.provenance.gpu
    if named is None:
        raise SpecError(FieldProblem(
            "gpu", "name the GPU type the profile was measured on (a catalog name or alias, "
                   "in gpu or provenance.gpu): stored profiles are selected per GPU type"))
    try:
        return canonical_gpu_name(named)
    except ValueError as exc:
        raise SpecError(FieldProblem("provenance.gpu", str(exc))) from None


def create(session: Session, body: CalibrationBody, principal: Principal) -> Calibration:
    profile = CalibrationProfile.model_validate(body.model_dump())
    data = profile.model_dump(mode="json")
    require_finite(data)
    gpu = _gpu_of(body)
    data["gpu"] = gpu
    row = Calibration(name=profile.name, gpu=gpu, profile=data, owner_id=principal.key_id)
    session.add(row)
    session.flush()
    return row


def list_calibrations(session: Session, gpu: str | None, limit: int, offset: int
                      ) -> list[Calibration]:
    if gpu is not None:
        try:
            gpu = canonical_gpu_name(gpu)
        except ValueError as exc:
            raise SpecError(FieldProblem("gpu", str(exc))) from None
    return repository.list_(session, gpu, limit, offset)


def get(session: Session, calibration_id: str) -> Calibration:
    ident = parse_id(calibration_id)
    row = repository.get(session, ident) if ident is not None else None
    if row is None:
        raise NotFound(f"no calibration with id {calibration_id!r}")
    return row


def resolve(session: Session, calibration_id: str, *, field: str = "calibration_id"
            ) -> tuple[uuid.UUID, CalibrationProfile]:
    """The stored profile a request names; invalid input (422 on ``field``) when unknown."""
    ident = parse_id(calibration_id)
    row = repository.get(session, ident) if ident is not None else None
    if row is None:
        raise SpecError(FieldProblem(field, f"no stored calibration with id {calibration_id!r} "
                                            "(GET /v1/calibrations lists them)"))
    try:
        return row.id, CalibrationProfile.model_validate(row.profile)
    except ValidationError:  # stored by an older version whose format has changed
        raise SpecError(FieldProblem(field, f"calibration {calibration_id} can no longer be "
                                            "read by this version; store it again")) from None


def summary(row: Calibration) -> CalibrationSummary:
    return CalibrationSummary(id=str(row.id), name=row.name, gpu=row.gpu,
                              source=str(row.profile.get("provenance", {}).get("source", "")),
                              created=row.created_at)


def detail(row: Calibration) -> CalibrationOut:
    return CalibrationOut(**summary(row).model_dump(),
                          profile=CalibrationProfile.model_validate(row.profile))
