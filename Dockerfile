# The worker image (the production-grade image with a lock file comes with the deployment work).
FROM python:3.11.10-slim
RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir .
USER app
CMD ["python", "worker.py"]
