/*
 * parleyctl.h — subcommands of the admin CLI `parleyctl`.
 *
 * Each subcommand lives in its own tools/ctl_<name>.c and is called with
 * argv[0] = the subcommand name. It returns the process exit code:
 * 0 success, 1 a check failed (e.g. verification found corruption),
 * 2 usage error, 3 runtime error (cannot open, I/O).
 */
#ifndef PARLEY_TOOLS_PARLEYCTL_H
#define PARLEY_TOOLS_PARLEYCTL_H

#include <stddef.h>

int ctl_inspect_main(int argc, char **argv);
int ctl_token_main(int argc, char **argv);
int ctl_cluster_main(int argc, char **argv);
int ctl_cluster_status_main(int argc, char **argv);
int ctl_cluster_members_main(int argc, char **argv); /* add-node, remove-node */
int ctl_cluster_rebalance_main(int argc, char **argv);
/* POST path (no body) to an admin port "host:port": 0 with the HTTP status
 * in *code and the body (NUL-terminated, truncated to cap), -1 when
 * nothing answered (ctl_cluster_members.c). */
int ctl_http_post(const char *hostport, const char *path, int *code,
		  char *body, size_t cap);

#endif
