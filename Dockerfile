# The complaints image: the worker (default command) and the codec server
# (`python -m infra.codec_server`), as docker-compose.yml runs them.
#
# Base image pinned to an exact Python patch release and Debian release; upgrading it is a
# deliberate edit here (docs/deployment.md, "Upgrading"). To pin by digest as well, append
# @sha256:<digest> as `docker buildx imagetools inspect python:3.11.17-slim-trixie` prints it.
FROM python:3.11.17-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user with a fixed uid; the code and the installed packages stay root-owned
# (read-only to the process).
RUN useradd --create-home --uid 10001 --user-group app

WORKDIR /app

# Dependencies first (a layer that changes only with pyproject.toml or constraints.txt): the
# runtime dependencies of pyproject.toml at exactly the versions of constraints.txt, the lock
# that `make test` (and so CI) installs too. No dev dependencies.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The application: only what the package declares (pyproject.toml [tool.setuptools]).
COPY worker.py admin.py ./
COPY complaints/ complaints/
COPY infra/ infra/
COPY dossier/ dossier/
COPY intake/ intake/
COPY workflows/ workflows/
COPY activities/ activities/
COPY starter/ starter/
COPY devstack/ devstack/
COPY bench/ bench/
# Level Up's product catalogue as shipped (PRODUCT_CATALOGUE_FILE's default; mount another and set it).
COPY examples/products.toml examples/products.toml
# Bytecode compiled now, as root: the sandbox imports the workflow module afresh for every
# workflow it runs, and with PYTHONDONTWRITEBYTECODE and a read-only tree each import would
# compile the source again (a fifth of the worker's CPU in a burst; BENCHMARKS.md).
RUN pip install --no-cache-dir --no-deps -c constraints.txt . \
    && rm -rf build *.egg-info \
    && python -m compileall -q /app \
    && python -c "import worker, infra.codec_server"

USER app

CMD ["python", "worker.py"]
