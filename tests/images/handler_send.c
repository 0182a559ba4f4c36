/* A tapped process whose first datagram to PORT is sent from inside a
 * signal handler: the handler (installed with sigaction, run by raise)
 * makes a UDP socket and sends "in-handler" on it; back in main, the same
 * socket sends "after-handler". After each it prints whether a module
 * image is mapped ("mapped yes|no": a published copy, CONTROL.kind-<sha256>,
 * in /proc/self/maps). The tap must
 * not load an image inside the handler: that datagram goes as written;
 * the next one, from main, is the first to meet the kind. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fd = -1;
static struct sockaddr_in peer;

static void on_usr1(int sig) {
    (void)sig;
    static const char msg[] = "in-handler";
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    sendto(fd, msg, sizeof msg - 1, 0, (struct sockaddr *)&peer, sizeof peer);
}

static void print_mapped(void) {
    char line[512];
    int found = 0;
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) {
        perror("maps");
        exit(1);
    }
    while (fgets(line, sizeof line, maps))
        if (strstr(line, ".kind-"))
            found = 1;
    fclose(maps);
    printf("mapped %s\n", found ? "yes" : "no");
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    memset(&peer, 0, sizeof peer);
    peer.sin_family = AF_INET;
    peer.sin_port = htons((unsigned short)atoi(argv[1]));
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        return 3;
    /* sigaction reports the handler the program installed. */
    struct sigaction now;
    if (sigaction(SIGUSR1, NULL, &now) != 0 || now.sa_handler != on_usr1 ||
        (now.sa_flags & SA_SIGINFO))
        return 4;
    raise(SIGUSR1);
    if (fd < 0)
        return 5;
    print_mapped();
    static const char msg[] = "after-handler";
    if (sendto(fd, msg, sizeof msg - 1, 0, (struct sockaddr *)&peer, sizeof peer) < 0)
        return 6;
    print_mapped();
    return 0;
}
