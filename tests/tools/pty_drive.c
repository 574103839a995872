/* pty_drive.c - run a command on a pseudo-terminal and type into it, for
 * tests of interactive programs (the prompt, line editing and history of
 * `dlcc repl`).
 *
 *   pty_drive SCRIPT -- COMMAND [ARGS...]
 *   pty_drive --probe          exit 0 if a pseudo-terminal can be opened, else 77
 *
 * SCRIPT holds one step per line:
 *   expect TEXT   wait until the output after the previous match contains TEXT
 *   send TEXT     type TEXT; escapes \r \n \t \e \\ \xHH (Ctrl-C is \x03,
 *                 Ctrl-D \x04, the up arrow \e[A).  It waits (up to 2 s)
 *                 for the terminal to leave canonical mode, as a line
 *                 editor puts it when it is ready for keys, and 0.2 s more
 *                 before a key that raises a signal.
 *   wait          wait for the command to exit; fail unless its status is 0
 *   # ...         a comment
 * Each step has 10 seconds.  Everything the command wrote is printed on
 * stdout, without carriage returns and terminal escape sequences, so a
 * FileCheck can read it.  Exit status: 0 when every step passed, 1 when one
 * failed (with a message on stderr), 77 when no pseudo-terminal is available.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

enum { STEP_TIMEOUT_MS = 10000, RAW_WAIT_MS = 2000, SIGNAL_KEY_SETTLE_MS = 200 };

static char *out;
static size_t out_len, out_cap, matched;

static void append(const char *p, size_t n) {
  if (out_len + n + 1 > out_cap) {
    out_cap = (out_len + n + 1) * 2;
    out = realloc(out, out_cap);
    if (!out) {
      perror("pty_drive");
      exit(1);
    }
  }
  memcpy(out + out_len, p, n);
  out_len += n;
  out[out_len] = '\0';
}

/* The transcript a reader sees: no \r, no escape sequences. */
static void print_clean(FILE *f) {
  for (size_t i = 0; i < out_len; i++) {
    unsigned char c = (unsigned char)out[i];
    if (c == '\r' || c == '\a') continue;
    if (c == 27) {
      if (i + 1 < out_len && out[i + 1] == '[') {
        i += 2;
        while (i < out_len && !((unsigned char)out[i] >= 0x40 && (unsigned char)out[i] <= 0x7e))
          i++;
      } else {
        i++;
      }
      continue;
    }
    fputc(c, f);
  }
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Read what the command wrote, for up to ms milliseconds; false at EOF. */
static int pump(int master, int ms) {
  struct pollfd p = {.fd = master, .events = POLLIN};
  int r = poll(&p, 1, ms);
  if (r <= 0) return 1;
  char buf[4096];
  ssize_t n = read(master, buf, sizeof buf);
  if (n <= 0) return 0; /* EIO: the command closed the terminal */
  append(buf, (size_t)n);
  return 1;
}

static size_t unescape(const char *s, char *dst) {
  size_t n = 0;
  for (; *s; s++) {
    if (*s != '\\' || !s[1]) {
      dst[n++] = *s;
      continue;
    }
    s++;
    switch (*s) {
    case 'r': dst[n++] = '\r'; break;
    case 'n': dst[n++] = '\n'; break;
    case 't': dst[n++] = '\t'; break;
    case 'e': dst[n++] = 27; break;
    case 'x': {
      char hex[3] = {s[1], s[1] ? s[2] : 0, 0};
      dst[n++] = (char)strtol(hex, NULL, 16);
      s += 2;
      break;
    }
    default: dst[n++] = *s; break;
    }
  }
  return n;
}

static int fail(const char *fmt, const char *arg) {
  fflush(stdout);
  fprintf(stderr, "pty_drive: the output so far:\n");
  print_clean(stderr);
  fprintf(stderr, "\npty_drive: ");
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  return 1;
}

static int open_pty(int *master, char **slave_name) {
  *master = posix_openpt(O_RDWR | O_NOCTTY);
  if (*master < 0 || grantpt(*master) != 0 || unlockpt(*master) != 0) return -1;
  *slave_name = ptsname(*master);
  return *slave_name ? 0 : -1;
}

int main(int argc, char **argv) {
  int master;
  char *slave_name;
  if (argc == 2 && !strcmp(argv[1], "--probe")) return open_pty(&master, &slave_name) == 0 ? 0 : 77;
  if (argc < 4 || strcmp(argv[2], "--") != 0) {
    fprintf(stderr, "usage: pty_drive SCRIPT -- COMMAND [ARGS...]\n       pty_drive --probe\n");
    return 2;
  }
  FILE *script = fopen(argv[1], "r");
  if (!script) {
    fprintf(stderr, "pty_drive: cannot open %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  if (open_pty(&master, &slave_name) != 0) {
    fprintf(stderr, "pty_drive: no pseudo-terminal: %s\n", strerror(errno));
    return 77;
  }
  pid_t pid = fork();
  if (pid < 0) {
    perror("pty_drive: fork");
    return 1;
  }
  if (pid == 0) {
    setsid();
    int slave = open(slave_name, O_RDWR);
    if (slave < 0) _exit(127);
    ioctl(slave, TIOCSCTTY, 0);
    struct winsize ws = {.ws_row = 24, .ws_col = 100};
    ioctl(slave, TIOCSWINSZ, &ws);
    dup2(slave, 0);
    dup2(slave, 1);
    dup2(slave, 2);
    if (slave > 2) close(slave);
    close(master);
    execvp(argv[3], argv + 3);
    _exit(127);
  }

  char line[4096], bytes[4096];
  int lineno = 0, status = -1;
  bool alive = true;
  while (fgets(line, sizeof line, script)) {
    lineno++;
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
      line[--n] = '\0';
    if (n == 0 || line[0] == '#') continue;
    if (!strncmp(line, "send ", 5)) {
      /* A line editor reads keys with the terminal out of canonical mode;
       * typed before it gets there, they would be echoed twice (once by the
       * terminal, once by the editor). */
      long deadline = now_ms() + RAW_WAIT_MS;
      struct termios tio;
      while (alive && now_ms() < deadline && tcgetattr(master, &tio) == 0 && (tio.c_lflag & ICANON))
        alive = pump(master, 5);
      size_t len = unescape(line + 5, bytes);
      /* A key that raises a signal (Ctrl-C, Ctrl-\, Ctrl-Z) must arrive
       * once the editor waits in read(): between leaving canonical mode
       * and that read the signal only sets the program's flag, and the
       * read then waits for more keys.  No person types within that
       * window; a loaded test machine sometimes did (tests/repl/
       * interactive.test timed out under the sanitizers).  So wait a
       * little longer for those, reading the output meanwhile. */
      if (memchr(bytes, 0x03, len) || memchr(bytes, 0x1c, len) || memchr(bytes, 0x1a, len)) {
        long settle = now_ms() + SIGNAL_KEY_SETTLE_MS;
        while (alive && now_ms() < settle)
          alive = pump(master, 5);
      }
      if (write(master, bytes, len) != (ssize_t)len)
        return fail("cannot type into the command: %s", strerror(errno));
    } else if (!strncmp(line, "expect ", 7)) {
      const char *want = line + 7;
      long deadline = now_ms() + STEP_TIMEOUT_MS;
      for (;;) {
        char *hit = out ? strstr(out + matched, want) : NULL;
        if (hit) {
          matched = (size_t)(hit - out) + strlen(want);
          break;
        }
        if (!alive || now_ms() > deadline) return fail("timed out waiting for '%s'", want);
        alive = pump(master, 50);
      }
    } else if (!strcmp(line, "wait")) {
      long deadline = now_ms() + STEP_TIMEOUT_MS;
      while (alive && now_ms() < deadline)
        alive = pump(master, 50);
      if (waitpid(pid, &status, alive ? WNOHANG : 0) <= 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return fail("%s did not exit", argv[3]);
      }
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return fail("%s failed", argv[3]);
    } else {
      fprintf(stderr, "pty_drive: %s:%d: unknown step '%s'\n", argv[1], lineno, line);
      return 2;
    }
  }
  if (status == -1) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  print_clean(stdout);
  return 0;
}
