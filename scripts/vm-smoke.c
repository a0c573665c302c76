/* vm-smoke: smallest useful payload for scripts/vm-matrix.
 * Build: musl-gcc -static -O2 -o target/vm-smoke scripts/vm-smoke.c
 * Run:   scripts/vm-matrix --bin target/vm-smoke -- any args
 * Checks, inside the VM: overlay is registered (after insmod), an overlay mounts on tmpfs, and a
 * first append to a lower file copies it up (upper gets lower+appended data, lower is untouched). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

static int failed;
#define CHECK(c, ...) do { if (!(c)) { failed = 1; printf("vm-smoke: FAIL %s:%d: ", __FILE__, __LINE__); \
    printf(__VA_ARGS__); printf(" (errno %s)\n", strerror(errno)); } } while (0)

static int slurp(const char *p, char *buf, size_t n) {
    int fd = open(p, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t r = read(fd, buf, n - 1);
    close(fd);
    if (r < 0) return -1;
    buf[r] = 0;
    return (int)r;
}

static int spew(const char *p, const char *s, int flags) {
    int fd = open(p, flags, 0644);
    if (fd < 0) return -1;
    ssize_t r = write(fd, s, strlen(s));
    close(fd);
    return r == (ssize_t)strlen(s) ? 0 : -1;
}

int main(int argc, char **argv) {
    struct utsname u;
    uname(&u);
    const char *env = getenv("COWPROF_VM_KERNEL");
    printf("vm-smoke: kernel %s, COWPROF_VM_KERNEL=%s, argc=%d\n", u.release, env ? env : "(unset)", argc);
    for (int i = 1; i < argc; i++) printf("vm-smoke: argv[%d]=<%s>\n", i, argv[i]);

    static char buf[65536];
    CHECK(slurp("/proc/filesystems", buf, sizeof buf) > 0, "read /proc/filesystems");
    CHECK(strstr(buf, "\toverlay\n") != NULL, "overlay not in /proc/filesystems");

    const char *dirs[] = {"/tmp/smoke", "/tmp/smoke/lower", "/tmp/smoke/upper", "/tmp/smoke/work",
                          "/tmp/smoke/merged"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++)
        CHECK(mkdir(dirs[i], 0755) == 0 || errno == EEXIST, "mkdir %s", dirs[i]);
    CHECK(spew("/tmp/smoke/lower/f", "lower\n", O_WRONLY | O_CREAT | O_TRUNC) == 0, "write lower file");

    int m = mount("overlay", "/tmp/smoke/merged", "overlay", 0,
                  "lowerdir=/tmp/smoke/lower,upperdir=/tmp/smoke/upper,workdir=/tmp/smoke/work");
    CHECK(m == 0, "mount overlay");
    if (m == 0) {
        struct stat st;
        CHECK(stat("/tmp/smoke/upper/f", &st) != 0, "upper/f exists before any write");
        CHECK(spew("/tmp/smoke/merged/f", "appended\n", O_WRONLY | O_APPEND) == 0, "append through overlay");
        CHECK(stat("/tmp/smoke/upper/f", &st) == 0, "no copy-up: upper/f missing after append");
        CHECK(slurp("/tmp/smoke/upper/f", buf, sizeof buf) >= 0 && strcmp(buf, "lower\nappended\n") == 0,
              "upper/f content <%s>", buf);
        CHECK(slurp("/tmp/smoke/lower/f", buf, sizeof buf) >= 0 && strcmp(buf, "lower\n") == 0,
              "lower/f changed: <%s>", buf);
        CHECK(umount("/tmp/smoke/merged") == 0, "umount");
    }
    printf("%d passed, %d failed\n", !failed, failed);
    fflush(stdout);
    return failed;
}
