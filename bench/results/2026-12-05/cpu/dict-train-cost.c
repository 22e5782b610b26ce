/*
 * dict-train-cost.c — CPU of one zstd fastCover dictionary training as
 * engine/history/dict.c runs it, and the held-out ratio of 2,000 other
 * messages compressed in 32 KiB blocks with the dictionary (messages cut
 * at random from the fortunes corpus, seed fixed).
 * build: gcc -O2 -o dt dict-train-cost.c -lzstd
 * usage: [ACC=accel] ./dt MSG_BYTES SAMPLE_BYTES F FINALIZE_LEVEL DICT_CAP EVAL_LEVEL
 * e.g.   ./dt 1024 4194304 20 9 102400 3   (the settings before)
 *        ACC=4 ./dt 1024 1048576 18 3 102400 3   (the settings after)
 */
#define ZDICT_STATIC_LINKING_ONLY
#include <zdict.h>
#include <zstd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double cpu(void){struct timespec t;clock_gettime(CLOCK_PROCESS_CPUTIME_ID,&t);return t.tv_sec+t.tv_nsec/1e9;}
static char *corpus; static size_t clen;
static void load(void){FILE*f=popen("cat /usr/share/games/fortunes/* 2>/dev/null | tr -s ' \\n\\t' ' '","r");size_t cap=1<<24;corpus=malloc(cap);clen=fread(corpus,1,cap,f);pclose(f);}
int main(int argc,char**argv){
  size_t msg=atoi(argv[1]); size_t total=atol(argv[2]); unsigned f=atoi(argv[3]); int lvl=atoi(argv[4]); size_t dcap=atol(argv[5]);
  load(); size_t n=total/msg; unsigned long long s=12345;
  char *buf=malloc(total); size_t *sz=malloc(n*sizeof*sz);
  for(size_t i=0;i<n;i++){s=s*6364136223846793005ULL+1442695040888963407ULL; size_t off=(s>>20)%(clen-msg); memcpy(buf+i*msg,corpus+off,msg); sz[i]=msg;}
  /* held-out set */
  size_t hn=2000; char*hb=malloc(hn*msg);
  for(size_t i=0;i<hn;i++){s=s*6364136223846793005ULL+1442695040888963407ULL; size_t off=(s>>20)%(clen-msg); memcpy(hb+i*msg,corpus+off,msg);}
  ZDICT_fastCover_params_t fp; memset(&fp,0,sizeof fp); fp.k=200; fp.d=8; fp.f=f; fp.accel=getenv("ACC")?atoi(getenv("ACC")):1; fp.zParams.compressionLevel=lvl;
  char*d=malloc(dcap); double t0=cpu();
  size_t r=ZDICT_trainFromBuffer_fastCover(d,dcap,buf,sz,(unsigned)n,fp);
  double t1=cpu(); if(ZDICT_isError(r)){printf("err %s\n",ZDICT_getErrorName(r));return 1;}
  /* ratio: compress held-out in 32 KiB blocks at level 3 with dict */
  ZSTD_CDict*cd=ZSTD_createCDict(d,r,atoi(argv[6])); ZSTD_CCtx*cc=ZSTD_createCCtx(); size_t blk=32768, out=0; char*ob=malloc(ZSTD_compressBound(blk));
  for(size_t o=0;o<hn*msg;o+=blk){size_t l=hn*msg-o<blk?hn*msg-o:blk; out+=ZSTD_compress_usingCDict(cc,ob,ZSTD_compressBound(blk),hb+o,l,cd);}
  printf("msg=%zu total=%zu f=%u lvl=%d dcap=%zu: train %.1f ms, dict %zu B, held-out ratio %.3f\n",msg,total,f,lvl,dcap,(t1-t0)*1e3,r,(double)out/(hn*msg));
}
