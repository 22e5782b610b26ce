import re,sys
for l in open(sys.argv[1]):
    m=re.match(r'(\S+)\s+acks (\d+) calls (\d+) ents (\d+) \|(.*)',l)
    if not m: continue
    ents=int(m.group(4)); tot=0; d={}
    for t,a,b,c in re.findall(r't(\d+): (\d+)/(\d+)/(\d+)',m.group(5)):
        d[int(t)]=(int(a),int(b),int(c)); tot+=int(a)+int(b)+int(c)
    print(m.group(1), "ents/APPEND %.2f msgs/entry %.2f noack/APPEND %.2f resp/APPEND %.2f" % (ents/d[1][0], tot/ents, d[1][2]/d[1][0], d[2][1]/d[1][0]))
