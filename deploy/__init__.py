"""Deployment tooling: RabbitMQ definitions and Kubernetes manifests rendered from the code, secrets for compose."""
