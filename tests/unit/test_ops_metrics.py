from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine

from aisf.services.common.metrics import DatabasePoolCollector, physical_gpu, register_build_info


def test_dcgm_gpu_label_follows_cuda_visible_devices() -> None:
    assert physical_gpu("cpu", "") == "" and physical_gpu("remote", "2") == ""
    assert physical_gpu("cuda:0", "") == "0"
    assert physical_gpu("cuda:1", "3,5") == "5"
    assert physical_gpu("cuda:0", "GPU-8f2c") == ""  # a UUID mask: only DCGM's UUID label could match


def test_the_database_pool_and_build_are_exported(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    engine = create_engine(f"sqlite:///{tmp_path / 'pool.db'}", pool_size=3, max_overflow=0)
    registry.register(DatabasePoolCollector(engine.pool, engine.dialect.name))
    register_build_info(registry, "9.9.9", "router")
    assert registry.get_sample_value("aisf_db_pool_size", {"dialect": "sqlite"}) == 3
    with engine.connect():
        assert registry.get_sample_value("aisf_db_pool_checked_out", {"dialect": "sqlite"}) == 1
    assert registry.get_sample_value("aisf_db_pool_checked_out", {"dialect": "sqlite"}) == 0
    assert registry.get_sample_value("aisf_build_info", {"version": "9.9.9", "role": "router"}) == 1
