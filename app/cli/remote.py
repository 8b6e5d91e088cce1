"""The CLI's work through a running server (the default): one API call per step, each job
followed to its end with a progress bar on stderr; and the commands only a server has,
``collections`` and ``jobs``.

The work functions return what the command prints as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import Annotated, Any

import typer
from tqdm import tqdm

from app.api.calibration.protocol import CalibrationRequest, to_qa_in
from app.api.collections.protocol import IndexRequest, to_documents_in
from app.api.jobs.protocol import JobOut
from app.cli.client import CovragClient
from app.cli.demo import demo_qa
from app.config import get_settings
from retrieval.types import Document

#: A request's share of a large ingestion: under the server's default documents per request,
#: and well under its default body size (16 MiB) even at 4 UTF-8 bytes a character.
BATCH_DOCUMENTS = 500
BATCH_CHARS = 3_000_000


def server(ctx: typer.Context, *, local_too: bool = True) -> CovragClient:
    """The client of the server the root ``--url`` names (default ``COVRAG_URL``); with
    ``local_too`` the command also runs in process, as an unreachable server's error says."""
    settings = get_settings()
    return CovragClient(
        ctx.find_root().params["url"] or settings.client.url,
        settings.client.api_key,
        timeout_s=settings.generator.timeout_s + 30,  # a query waits on the generator
        hint="start it with `covrag serve`" + (" or pass --local" if local_too else ""),
    )


def follow(
    client: CovragClient, steps: list[tuple[float, Callable[[], JobOut]]], desc: str, unit: str
) -> list[JobOut]:
    """Start each job in turn and wait for it, one bar over all of them: a step of weight w
    moves the bar by w × its job's progress. A job's messages go to stderr at its end."""
    finished: list[JobOut] = []
    done = 0.0
    with tqdm(total=sum(w for w, _ in steps), unit=unit, desc=desc) as bar:
        for weight, start in steps:
            job = start()
            bar.set_postfix_str(f"job {job.id}")

            def show(state: JobOut, before: float = done, weight: float = weight) -> None:
                bar.update(round(before + weight * state.progress, 3) - bar.n)

            finished.append(client.wait(job, show))
            done += weight
    for job in finished:
        for message in job.messages:
            typer.echo(f"job {job.id}: {message}", err=True)
    return finished


def ingest(client: CovragClient, name: str, docs: list[Document], demo: bool) -> dict[str, Any]:
    """Post ``docs`` in batches (one job each); for the ``demo``, calibrate from its QA set
    unless the server has a fresh calibration. Returns the summed reports."""
    steps: list[tuple[float, Callable[[], JobOut]]] = [
        (len(batch), partial(client.ingest, name, to_documents_in(batch)))
        for batch in batches(docs)
    ]
    reports = [job.result or {} for job in follow(client, steps, f"ingest → {name}", "doc")]
    counts = ("documents", "added", "updated", "unchanged", "chunks_written")
    total = {"collection": name, **{k: sum(r[k] for r in reports) for k in counts}}
    if demo:
        status = client.calibration(name)
        if status.calibration is None or status.calibration.stale:
            items = demo_qa(name)
            if items:
                summary = calibrate(client, name, CalibrationRequest(qa=to_qa_in(items)))
                typer.echo(json.dumps(summary), err=True)
    return total


def calibrate(client: CovragClient, name: str, body: CalibrationRequest) -> dict[str, Any]:
    [job] = follow(client, [(100, partial(client.calibrate, name, body))], f"calibrate {name}", "%")
    return job.result or {}


def index(client: CovragClient, name: str, body: IndexRequest) -> dict[str, Any]:
    [job] = follow(client, [(100, partial(client.index, name, body))], f"index {name}", "%")
    return job.result or {}


def batches(docs: list[Document]) -> Iterator[list[Document]]:
    batch: list[Document] = []
    chars = 0
    for doc in docs:
        if batch and (len(batch) == BATCH_DOCUMENTS or chars + len(doc.text) > BATCH_CHARS):
            yield batch
            batch, chars = [], 0
        batch.append(doc)
        chars += len(doc.text)
    if batch:
        yield batch


collections_cli = typer.Typer(help="The server's collections.")


@collections_cli.callback(invoke_without_command=True)
def collections(ctx: typer.Context) -> None:
    """List the server's collections as JSON; `covrag collections delete NAME` deletes one."""
    if ctx.invoked_subcommand is None:
        with server(ctx, local_too=False) as client:
            typer.echo(client.collections().model_dump_json(indent=2))


@collections_cli.command("delete")
def delete_collection(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The collection.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
) -> None:
    """Delete a collection: its documents, chunks, calibrations and cached answers."""
    if not yes:
        typer.confirm(f"delete collection {name!r} and everything in it?", abort=True)
    with server(ctx, local_too=False) as client:
        typer.echo(client.delete_collection(name).model_dump_json())


def jobs(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="The id a command or POST started it under.")],
    wait: Annotated[bool, typer.Option(help="Follow it to its end with a progress bar.")] = False,
) -> None:
    """Show a background job of the server (ingest, calibration, index) as JSON."""
    with server(ctx, local_too=False) as client:
        job = started = client.job(job_id)
        if wait:
            [job] = follow(client, [(100, lambda: started)], f"{job.kind} {job.collection}", "%")
    typer.echo(job.model_dump_json(indent=2))
