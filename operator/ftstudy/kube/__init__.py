"""ftstudy on Kubernetes: the operator's shells around the study engine (Jobs, status, kopf handlers, leadership).

Nothing here decides: ``ftstudy.core`` does, as it does for ``ftstudy run``. These modules turn its actions into
Kubernetes objects and turn what the cluster shows back into the observations it decides by.
"""
