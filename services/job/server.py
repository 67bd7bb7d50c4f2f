"""Assembles the job role: the job service, the Files and Batch APIs, their file storage, and the gRPC
services the caller serves; and what a worker needs to finish batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from temporalio.client import Client

from aisf.services.clients.router_client import RouterClient
from aisf.services.common.auth.key_store import KeyStore
from aisf.services.common.db.engine import Database
from aisf.services.common.db.shared_secrets import shared_secret
from aisf.services.common.grpc_server import Registrar
from aisf.services.common.sealing import PayloadSeal, key_from_text
from aisf.services.common.settings import Settings
from aisf.services.job import batch_servicer, servicer
from aisf.services.job.batch_output import BatchFinalizer
from aisf.services.job.batch_store import BatchStore
from aisf.services.job.batches import BatchService, FileService
from aisf.services.job.file_storage import FileStorage, LocalFileStorage, S3FileStorage
from aisf.services.job.payload_redaction import PayloadRedactor, Redact
from aisf.services.job.sealed_storage import SealedFileStorage
from aisf.services.job.service import JobService
from aisf.services.job.store import JobStore
from aisf.services.job.submit_checks import SubmitChecks

PAYLOAD_KEY = "payload-key"
log = logging.getLogger(__name__)


async def payload_seal(settings: Settings, database: Database) -> PayloadSeal:
    """The seal of stored payloads: AISF_PAYLOAD_KEY, else the key the roles keep in the database."""
    text = settings.payload_key.get_secret_value()
    if not text:
        text = await database.run(shared_secret, database.engine, PAYLOAD_KEY)
        # The embedded default keeps data and key on one disk anyway; a shared database should not.
        embedded = database.engine.dialect.name == "sqlite"
        log.log(
            logging.INFO if embedded else logging.WARNING,
            "stored payloads are sealed under a key kept in the metadata database (AISF_PAYLOAD_KEY "
            "unset): a copy of the database opens them",
        )
    try:
        return PayloadSeal(key_from_text(text))
    except ValueError as exc:
        raise ValueError(f"AISF_PAYLOAD_KEY: {exc}") from None


def open_storage(settings: Settings, seal: PayloadSeal) -> FileStorage:
    """The file storage, its files sealed at rest."""
    inner: FileStorage
    if settings.files_storage == "s3":
        inner = S3FileStorage(
            settings.files_s3_bucket,
            settings.files_s3_prefix,
            settings.files_s3_endpoint_url,
            settings.files_s3_region,
        )
    else:
        inner = LocalFileStorage((settings.files_dir or settings.data_dir / "files").resolve())
    return SealedFileStorage(inner, seal)


def payload_redactor(
    settings: Settings, redact: Redact | None, registry: CollectorRegistry
) -> PayloadRedactor | None:
    """What redacts answered items before they are kept: the pii role's Redact, unless told to seal."""
    if settings.pii_stored_payloads == "seal":
        return None
    if redact is None:
        log.warning(
            "answered job items are kept sealed, not redacted: no pii role here (AISF_PII_SERVICE) or at "
            "AISF_PII_ADDRESS"
        )
        return None
    return PayloadRedactor(redact, settings.pii_max_texts, settings.pii_max_text_chars, registry)


def build_finalizer(database: Database, jobs: JobStore, storage: FileStorage) -> BatchFinalizer:
    return BatchFinalizer(jobs, BatchStore(database), storage)


@dataclass(slots=True)
class JobLane:
    jobs: JobService
    checks: SubmitChecks
    registrars: list[Registrar] = field(default_factory=list)
    service_names: list[str] = field(default_factory=list)

    async def close(self) -> None:
        await self.jobs.close()
        self.checks.close()


def build_job_lane(
    settings: Settings,
    database: Database,
    store: JobStore,
    router: RouterClient,
    temporal: Client,
    storage: FileStorage,
) -> JobLane:
    checks = SubmitChecks(router, settings.job_max_items)
    keys = KeyStore(database, frozenset()) if settings.auth == "keys" else None
    jobs = JobService(settings, store, temporal, checks, keys.tier if keys is not None else None)
    batch_store = BatchStore(database)
    files = FileService(batch_store, storage, settings.files_max_bytes)
    finalizer = BatchFinalizer(store, batch_store, storage)
    batches = BatchService(jobs, store, batch_store, files, checks, finalizer)
    jobs.start()
    return JobLane(
        jobs,
        checks,
        [servicer.register(jobs), batch_servicer.register(files, batches)],
        [servicer.SERVICE_NAME, batch_servicer.FILE_SERVICE, batch_servicer.BATCH_SERVICE],
    )
