"""`voxsep serve`: a local web page to separate recordings (upload or record, count, listen, download).

Opens ``http://127.0.0.1:8000/`` (``--host``/``--port``; ``--port 0`` picks a free port). The page
runs on the same :class:`separation.inference.Separator` as `voxsep separate` (same ``--model``,
``--window``, ``--overlap``, counting options), one job at a time from a queue, and offers the
denoiser when ``--enhance CKPT`` names one. Uploads and results live in a work folder (a new
temporary folder unless ``--work-dir``) and are deleted ``--keep-minutes`` after each job ends, and
all of them when the server stops. Needs the ``[web]`` extra (Starlette, uvicorn); without it the
command says which extra to install and exits with status 2.

See :mod:`voxsep.web` for the parts and their safety rules.
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

from frontend.errors import VoxsepError
from voxsep.commands.separate import add_separator_options, load_separator

WEB_MODULES = ("starlette", "uvicorn")
INSTALL_HINT = "pip install 'voxsep[web]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this computer only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0: any free port)")
    add_separator_options(parser)
    parser.add_argument("--enhance", default=None, metavar="NAME|CKPT",
                        help="offer this WaveNet denoiser on the page (a bundled name such as default, or a checkpoint)")
    parser.add_argument("--work-dir", default=None, metavar="DIR",
                        help="folder for uploads and results (default: a new temporary folder, removed on exit)")
    parser.add_argument("--max-upload-mb", type=float, default=200.0, metavar="MB",
                        help="largest upload in MB (default %(default)g)")
    parser.add_argument("--max-minutes", type=float, default=60.0, metavar="MIN",
                        help="longest recording in minutes (default %(default)g)")
    parser.add_argument("--keep-minutes", type=float, default=60.0, metavar="MIN",
                        help="delete uploads and results this long after each job ends (default %(default)g)")
    parser.add_argument("--max-jobs", type=int, default=20, metavar="N",
                        help="files uploading, waiting or running at once; more are refused (default %(default)s)")


def check_web_extra() -> None:
    """Raise a one-line :class:`VoxsepError` naming the extra when Starlette or uvicorn is missing."""
    def found(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken install
            return False

    if not all(found(name) for name in WEB_MODULES):
        # the wording of voxsep.extras.extra_message
        raise VoxsepError(f"voxsep serve needs the web extra: {INSTALL_HINT}")


def limits_from(args: argparse.Namespace):
    """The service limits from the command line (one-line error for a non-positive value)."""
    from voxsep.web.jobs import Limits

    for flag in ("max_upload_mb", "max_minutes", "keep_minutes", "max_jobs"):
        if getattr(args, flag) <= 0:
            raise VoxsepError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    return Limits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_duration_s=args.max_minutes * 60.0,
                  keep_s=args.keep_minutes * 60.0, max_jobs=args.max_jobs)


def run(args: argparse.Namespace) -> int:
    check_web_extra()
    from voxsep.web.app import allowed_hosts_for, bind, create_app, make_server, url_of
    from voxsep.web.jobs import SeparationService

    limits = limits_from(args)
    sock = bind(args.host, args.port)  # before loading the model: a taken port fails at once
    own_work_dir = args.work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="voxsep-serve-")) if own_work_dir else Path(args.work_dir)
    service = None
    try:
        if not own_work_dir and work_dir.exists() and not work_dir.is_dir():
            raise VoxsepError(f"{work_dir}: not a folder (--work-dir)")
        separator = load_separator(args)
        enhancer = None
        if args.enhance:
            from voxsep.pipelines import load_enhancer

            enhancer = load_enhancer(args.enhance)
        service = SeparationService(separator, work_dir, limits, enhancer=enhancer,
                                    enhancer_name=str(args.enhance or ""), log=lambda line: print(line, flush=True))
        hosts = allowed_hosts_for(args.host)
        server = make_server(create_app(service, allowed_hosts=hosts))
        url = url_of(sock)
        print(f"voxsep serve: {url} (model {args.model}, {separator.max_speakers} talkers at most; "
              f"work folder {work_dir}; Ctrl+C stops)", flush=True)
        if hosts is None:
            print(f"voxsep serve: warning: listening on {args.host}: other computers can reach this page",
                  file=sys.stderr, flush=True)
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn stops on Ctrl+C, then raises it again: the normal way out
            pass
    finally:
        sock.close()
        if service is not None:
            service.close()
        if own_work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    print("voxsep serve: stopped; uploads and results deleted", flush=True)
    return 0
