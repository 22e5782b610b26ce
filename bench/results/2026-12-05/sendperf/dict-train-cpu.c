#define ZDICT_STATIC_LINKING_ONLY
#include <zdict.h>
#include <zstd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_PROCESS_CPUTIME_ID,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int argc,char**argv){
	/* samples: fortunes split on "\n%\n", repeated with variations up to 4 MiB */
	FILE*f=fopen(argv[1],"rb"); static char text[8<<20]; size_t tl=fread(text,1,sizeof text,f); fclose(f);
	static size_t sizes[200000]; static char buf[4<<20]; size_t n=0,off=0; size_t i=0;
	for (int rep=0; off < (4u<<20) - 8192 && rep < 64; rep++) {
		size_t s=0;
		for (i=0;i<tl && off < (4u<<20)-8192;i++){
			if (text[i]=='%' && (i+1>=tl||text[i+1]=='\n')) { size_t l=i-s; if(l>0&&l<4096){memcpy(buf+off,text+s,l); buf[off]=(char)('A'+rep%26); sizes[n++]=l; off+=l;} s=i+2; i++; }
		}
	}
	printf("samples %zu bytes %zu\n",n,off);
	static char dict[100*1024];
	size_t cap = off/8 < sizeof dict ? off/8 : sizeof dict;
	double t0=now(); size_t r=ZDICT_trainFromBuffer(dict,cap,buf,sizes,(unsigned)n); double t1=now();
	printf("trainFromBuffer: %zu B in %.3f s\n", ZDICT_isError(r)?0:r, t1-t0);
	ZDICT_fastCover_params_t p; memset(&p,0,sizeof p); p.d=8; p.steps=4; p.zParams.compressionLevel=3;
	t0=now(); r=ZDICT_optimizeTrainFromBuffer_fastCover(dict,cap,buf,sizes,(unsigned)n,&p); t1=now();
	printf("optimize: %zu B in %.3f s, k=%u d=%u f=%u accel=%u\n", ZDICT_isError(r)?0:r, t1-t0,p.k,p.d,p.f,p.accel);
	unsigned ks[]={p.k, 50, 200, 1000};
	for (int a=1;a<=4;a*=2) for (int j=0;j<4;j++){
		ZDICT_fastCover_params_t q; memset(&q,0,sizeof q); q.k=ks[j]; q.d=8; q.f=20; q.accel=a; q.zParams.compressionLevel=3;
		t0=now(); r=ZDICT_trainFromBuffer_fastCover(dict,cap,buf,sizes,(unsigned)n,q); t1=now();
		/* ratio on the samples, each compressed alone with the dict at level 9 */
		ZSTD_CDict*cd=ZSTD_createCDict(dict,r,9); ZSTD_CCtx*cc=ZSTD_createCCtx(); size_t tot=0,o2=0; static char out[16384];
		for(size_t k=0;k<n;k+=7){ tot+=ZSTD_compress_usingCDict(cc,out,sizeof out,buf+o2,sizes[k],cd); o2+=sizes[k]; for(size_t z=k+1;z<k+7&&z<n;z++) o2+=sizes[z]; }
		printf("fastCover k=%u accel=%d: %zu B in %.3f s; per-message compressed %zu\n", q.k,a, ZDICT_isError(r)?0:r, t1-t0, tot);
		ZSTD_freeCDict(cd); ZSTD_freeCCtx(cc);
	}
	return 0;
}
