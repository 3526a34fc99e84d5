"""Every YAML deployment file parses, with duplicate keys refused (PyYAML keeps the last one
silently, which hides a broken edit)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy import AKASH_HA_SDL, AKASH_SDL, COMPOSE_FILE, K8S_DIR, ROOT, load_yaml_documents


def deployment_yaml_files() -> list[Path]:
    files = sorted(K8S_DIR.rglob("*.yaml")) + sorted(K8S_DIR.rglob("*.yml"))
    return [COMPOSE_FILE, AKASH_SDL, AKASH_HA_SDL, *files]


def test_the_artefacts_exist() -> None:
    for path in (
        "Dockerfile",
        ".dockerignore",
        ".env.example",
        "docker-compose.cluster.yml",
        "nginx/compose.conf",
        "akash/deploy.yaml",
        "akash/deploy-ha.yaml",
        "postgres/relay.conf",
        "postgres/init-replication.sh",
        "docs/DEPLOY.md",
        "k8s/base/kustomization.yaml",
        "k8s/datastores/kustomization.yaml",
        "k8s/overlays/dev/kustomization.yaml",
        "k8s/overlays/prod/kustomization.yaml",
        "k8s/overlays/ha/kustomization.yaml",
    ):
        assert (ROOT / path).is_file(), f"{path} is missing"
    assert len(deployment_yaml_files()) > 10


@pytest.mark.parametrize(
    "path", deployment_yaml_files(), ids=lambda path: str(path.relative_to(ROOT))
)
def test_every_yaml_file_parses(path: Path) -> None:
    documents = load_yaml_documents(path.read_text())
    assert documents, f"{path} holds no YAML document"
    for document in documents:
        assert isinstance(document, dict), f"{path}: a document is not a mapping"


def test_a_duplicate_key_is_refused() -> None:
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'image'"):
        load_yaml_documents("services:\n  relay:\n    image: a:1\n    image: b:2\n")


def test_a_broken_document_is_refused() -> None:
    with pytest.raises(yaml.YAMLError):
        load_yaml_documents("services:\n  relay:\n    image: a:1\n   command: [serve\n")


def test_merge_keys_may_be_overridden() -> None:
    (document,) = load_yaml_documents("x: &x {a: 1, b: 2}\ny:\n  <<: *x\n  b: 3\n")
    assert document["y"] == {"a": 1, "b": 3}


def test_the_deployment_guide_walks_through_every_target() -> None:
    guide = (ROOT / "docs" / "DEPLOY.md").read_text()
    headings = [line for line in guide.splitlines() if line.startswith("#")]
    for heading in ("## Docker Compose", "## Kubernetes", "## Akash Network", "### Cost"):
        assert heading in headings, heading
    for topic in ("### Updating", "### Update", "### Production", "### Deploy"):
        assert topic in headings, topic
    for command in (
        "docker compose up -d --build",
        "kubectl apply -k k8s/overlays/prod",
        "akt deploy deploy.rendered.yaml",
        "akt update deploy.rendered.yaml",
    ):
        assert command in guide, command
    # the `akt` CLI replaced `akash` and `provider-services`: no command of theirs is documented
    assert "provider-services tx" not in guide and "akash tx" not in guide
