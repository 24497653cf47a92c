/* The pod sandbox's process (the "pause" container): it holds the pod's namespaces and does nothing else.
 * Kubernetes' own pause image is pulled from a registry, which the machines this project is tested on cannot reach,
 * so scripts/images.sh compiles this one statically and puts it in an image of its own. As PID 1 it must reap
 * orphaned children and leave on SIGTERM/SIGINT, which is all the upstream program does too. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void leave(int sig) { _exit(128 + sig); }

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction stop = {.sa_handler = leave};
    struct sigaction child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
    sigaction(SIGINT, &stop, NULL);
    sigaction(SIGTERM, &stop, NULL);
    sigaction(SIGCHLD, &child, NULL);
    for (;;) pause();
    return 0;
}
