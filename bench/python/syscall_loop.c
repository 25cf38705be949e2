// The cost of tracing one socket syscall, without Python or HTTP in the way:
// a TCP loopback pair inside one process, 64-byte write on one end, read on
// the other. Prints "READY <pid>", then the mean ns per write+read
// pair of each 0.5 s window, for `seconds` (argv[1], default 20).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e9+t.tv_nsec;}
int main(int argc,char**argv){
  int secs=argc>1?atoi(argv[1]):20;
  int l=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in a={.sin_family=AF_INET,.sin_addr.s_addr=htonl(INADDR_LOOPBACK)};
  socklen_t n=sizeof a;bind(l,(void*)&a,n);listen(l,1);getsockname(l,(void*)&a,&n);
  int c=socket(AF_INET,SOCK_STREAM,0);connect(c,(void*)&a,n);int s=accept(l,0,0);
  int one=1;setsockopt(c,IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);
  char buf[64]={'G','E','T',' ','/'};
  printf("READY %d\n",getpid());fflush(stdout);
  double end=now()+secs*1e9;
  while(now()<end){
    double t0=now();long i=0;
    while(now()-t0<5e8){ for(int k=0;k<100;k++){ if(write(c,buf,64)!=64)return 1; if(read(s,buf,64)!=64)return 1;} i+=100;}
    printf("%.0f\n",(now()-t0)/i);fflush(stdout);
  }
  return 0;
}
