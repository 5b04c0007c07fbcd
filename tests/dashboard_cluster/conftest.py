from tests.k8s_fake.fixtures import kube_api, kubeconfig

__all__ = ["kube_api", "kubeconfig"]
