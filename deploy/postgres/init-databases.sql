-- One database per raftmq node: each node keeps its own log, term and vote (a node never
-- shares its database). Run once by the postgres image, from /docker-entrypoint-initdb.d,
-- when its data volume is empty. The nodes create their tables themselves (alembic).
CREATE DATABASE raftmq_n1;
CREATE DATABASE raftmq_n2;
CREATE DATABASE raftmq_n3;
