/* Placeholder while this command is being written in this session; replaced before submission. */
#include <stdio.h>
int cmd_inspect(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "ftune: error: this command is not built yet\n");
    return 1;
}
