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

int ctl_inspect_main(int argc, char **argv);
int ctl_token_main(int argc, char **argv);
int ctl_cluster_main(int argc, char **argv);
int ctl_cluster_status_main(int argc, char **argv);

#endif
