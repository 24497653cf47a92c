"""A real Kubernetes control plane with simulated GPU nodes, for tests that need the API's real semantics.

There is no container runtime here, so the control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) is real while the kubelet is simulated: pods bound to its nodes run as local processes.
"""
