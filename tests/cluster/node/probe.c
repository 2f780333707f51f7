/* The test bed's traffic probe, built with gcc -static into a FROM-scratch image (no busybox):
 *   probe serve PORT          answer every TCP connection with "HTTP/1.0 200 OK ... hello from HOSTNAME"
 *   probe get IP PORT [MS]    try for MS milliseconds (default 3000, an attempt every 200 ms):
 *                             exit 0 at the first 200 answer (printed), 1 if none came (refused,
 *                             timed out, anything else). Retrying matters: a new pod's address
 *                             reaches NetworkPolicy enforcers a moment after the pod starts.
 *   probe connect IP PORT [MS] the same, succeeding once a TCP connection is established.
 *   probe resolve NAME [MS]   ask the first nameserver of /etc/resolv.conf (what kubelet wrote:
 *                             the cluster DNS) for NAME's A record over UDP, retrying the same
 *                             way: exit 0 printing "OK NAME IP" at the first answer with an
 *                             address, 1 if none came (no answer, refused, NXDOMAIN...).
 * Used until the project's own HTTP probe image exists on this branch. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int serve(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = INADDR_ANY};
  char host[256] = "?", buf[512], out[600];
  gethostname(host, sizeof host - 1);
  signal(SIGPIPE, SIG_IGN);
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 64) < 0) {
    perror("serve");
    return 1;
  }
  printf("serving on :%d as %s\n", port, host);
  fflush(stdout);
  for (;;) {
    int c = accept(s, NULL, NULL);
    if (c < 0) continue;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)read(c, buf, sizeof buf); /* the request line; its content does not matter */
    int n = snprintf(out, sizeof out, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from %s\n", host);
    (void)write(c, out, n);
    close(c);
  }
}

static int attempt(const char *ip, int port, int ms, int connect_only) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  char buf[512] = {0};
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
    fprintf(stderr, "FAIL %s: not an IPv4 address\n", ip);
    return 1;
  }
  if (s < 0) goto fail;
  fcntl(s, F_SETFL, O_NONBLOCK);
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) goto fail;
  struct pollfd p = {.fd = s, .events = POLLOUT};
  if (poll(&p, 1, ms) != 1) {
    errno = ETIMEDOUT;
    goto fail;
  }
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err) {
    errno = err;
    goto fail;
  }
  if (connect_only) {
    printf("OK %s:%d connected\n", ip, port);
    close(s);
    return 0;
  }
  fcntl(s, F_SETFL, 0);
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const char req[] = "GET / HTTP/1.0\r\n\r\n";
  if (write(s, req, sizeof req - 1) < 0) goto fail;
  size_t got = 0;
  ssize_t n;
  while (got < sizeof buf - 1 && (n = read(s, buf + got, sizeof buf - 1 - got)) > 0) got += n;
  close(s);
  if (strncmp(buf, "HTTP/1.0 200", 12) != 0) {
    fprintf(stderr, "FAIL %s:%d: unexpected answer\n", ip, port);
    return 1;
  }
  char *body = strstr(buf, "\r\n\r\n");
  printf("OK %s:%d %s", ip, port, body ? body + 4 : "\n");
  return 0;
fail:
  fprintf(stderr, "FAIL %s:%d: %s\n", ip, port, strerror(errno));
  if (s >= 0) close(s);
  return 1;
}

static long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

static int get(const char *ip, int port, int ms, int connect_only) {
  long deadline = now_ms() + ms;
  for (;;) {
    long left = deadline - now_ms();
    if (attempt(ip, port, left < 1000 ? (left > 50 ? (int)left : 50) : 1000, connect_only) == 0) return 0;
    if (now_ms() + 200 >= deadline) return 1;
    usleep(200 * 1000);
  }
}

/* The first `nameserver` of /etc/resolv.conf, into `out`. */
static int nameserver(struct in_addr *out) {
  FILE *f = fopen("/etc/resolv.conf", "r");
  char line[256], ip[64];
  int found = 0;
  if (!f) return 0;
  while (!found && fgets(line, sizeof line, f))
    found = sscanf(line, " nameserver %63s", ip) == 1 && inet_pton(AF_INET, ip, out) == 1;
  fclose(f);
  return found;
}

/* One A query for `name` to `ns`: 0 with the first address in `addr`, -1 otherwise. */
static int query(struct in_addr ns, const char *name, int ms, char *addr, size_t addr_len) {
  unsigned char q[512], a[1500];
  size_t n = 12, len = strlen(name);
  unsigned short id = (unsigned short)(now_ms() & 0xffff);
  if (len == 0 || len > 253) return -1;
  memset(q, 0, sizeof q);
  q[0] = id >> 8, q[1] = id & 0xff, q[2] = 0x01 /* recursion desired */, q[5] = 1 /* one question */;
  for (const char *label = name; *label;) {
    const char *dot = strchr(label, '.');
    size_t l = dot ? (size_t)(dot - label) : strlen(label);
    if (l == 0 || l > 63) break;
    q[n++] = (unsigned char)l;
    memcpy(q + n, label, l);
    n += l;
    label += l + (dot ? 1 : 0);
  }
  q[n++] = 0;
  q[n++] = 0, q[n++] = 1; /* type A */
  q[n++] = 0, q[n++] = 1; /* class IN */
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(53), .sin_addr = ns};
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  if (s < 0) return -1;
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ssize_t got = -1;
  if (sendto(s, q, n, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)n) got = recv(s, a, sizeof a, 0);
  int err = errno;
  close(s);
  if (got < 12 || a[0] != q[0] || a[1] != q[1]) {
    fprintf(stderr, "FAIL %s: no answer from %s: %s\n", name, inet_ntoa(ns), got < 0 ? strerror(err) : "short reply");
    return -1;
  }
  int rcode = a[3] & 0x0f, answers = a[6] << 8 | a[7];
  if (rcode != 0 || answers == 0) {
    fprintf(stderr, "FAIL %s: rcode %d, %d answers\n", name, rcode, answers);
    return -1;
  }
  /* Skip the question (echoed as sent), then walk the answers for an A record. */
  size_t p = n;
  for (int i = 0; i < answers && p < (size_t)got; i++) {
    if (a[p] & 0xc0) p += 2; /* a compressed name */
    else {
      while (p < (size_t)got && a[p]) p += a[p] + 1;
      p++;
    }
    if (p + 10 > (size_t)got) break;
    int type = a[p] << 8 | a[p + 1], rdlen = a[p + 8] << 8 | a[p + 9];
    p += 10;
    if (type == 1 && rdlen == 4 && p + 4 <= (size_t)got) {
      inet_ntop(AF_INET, a + p, addr, addr_len);
      return 0;
    }
    p += rdlen;
  }
  fprintf(stderr, "FAIL %s: no A record in the answer\n", name);
  return -1;
}

static int resolve(const char *name, int ms) {
  struct in_addr ns;
  char addr[INET_ADDRSTRLEN];
  if (!nameserver(&ns)) {
    fprintf(stderr, "FAIL %s: no nameserver in /etc/resolv.conf\n", name);
    return 1;
  }
  long deadline = now_ms() + ms;
  for (;;) {
    long left = deadline - now_ms();
    if (query(ns, name, left < 1000 ? (left > 50 ? (int)left : 50) : 1000, addr, sizeof addr) == 0) {
      printf("OK %s %s\n", name, addr);
      return 0;
    }
    if (now_ms() + 200 >= deadline) return 1;
    usleep(200 * 1000);
  }
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "serve") == 0) return serve(atoi(argv[2]));
  int ms = argc > 4 ? atoi(argv[4]) : 3000;
  if (argc >= 4 && strcmp(argv[1], "get") == 0) return get(argv[2], atoi(argv[3]), ms, 0);
  if (argc >= 4 && strcmp(argv[1], "connect") == 0) return get(argv[2], atoi(argv[3]), ms, 1);
  if (argc >= 3 && strcmp(argv[1], "resolve") == 0) return resolve(argv[2], argc > 3 ? atoi(argv[3]) : 3000);
  fprintf(stderr, "usage: probe serve PORT | probe get|connect IP PORT [TIMEOUT_MS] | probe resolve NAME [TIMEOUT_MS]\n");
  return 2;
}
